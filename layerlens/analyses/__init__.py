"""The analyses: one package per kind, each registered ONCE in :mod:`.registry`.

Adding a kind (say ``saliency``)
--------------------------------
1. Make a package ``layerlens/analyses/saliency/`` with, split by concern:

   - ``spec.py`` (torch-free): ``SaliencySpec`` (pydantic, ``extra="forbid"``, a
     field ``kind: Literal["saliency"]``, the common keys from
     :class:`.sections.SpecEntry`) and ``SaliencySection``, the typed report
     section (per-layer rows may be :class:`.sections.SkippedLayer` or
     :class:`.sections.FailedLayer`);
   - ``science.py``: the computation, arrays or a probed model in, results out
     (numpy/torch, no matplotlib, no report);
   - ``figures.py``: the PNG figures (matplotlib, no science);
   - ``run.py``: ``run(spec, ctx) -> SaliencySection``, the report glue;
     :class:`.base.AnalysisContext` gives the captured layers, the model, the
     dataset, artifacts and progress; :func:`.base.each_layer` keeps one failing
     layer from losing the others;
   - ``template.html``: the section of the HTML page (sees ``section``, ``report``);
   - ``__init__.py`` (torch-free): ``KIND = AnalysisKind(...)`` naming the parts.
2. Add its package to :data:`.registry.BUILTIN` (one line).

The spec union, ``POST /v1/jobs`` in OpenAPI, the report schema and the HTML
page follow. :class:`.kind.AnalysisKind` refuses, when the package is
imported, a kind that lacks a part. Shared solvers live beside the kinds
(:mod:`.lbfgs`).

This package and every kind's ``__init__``/``spec`` import no torch.
"""

from layerlens.analyses.kind import AnalysisKind, KindError
from layerlens.analyses.registry import REGISTRY, register

__all__ = ["REGISTRY", "AnalysisKind", "KindError", "register"]
