"""The analyses, one module per kind, each with ``run(spec, ctx) -> report section``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from layerlens.analyses.base import AnalysisContext, ArtifactWriter, skipped

#: kind -> module holding its ``run``; imported on first use (UMAP and t-SNE are slow to import).
MODULES = {
    "linear_probe": "layerlens.analyses.linear_probe",
    "projection": "layerlens.analyses.projection",
    "mutual_information": "layerlens.analyses.mutual_information",
    "activation_maximization": "layerlens.analyses.activation_maximization",
}


def runner(kind: str) -> Callable[[Any, AnalysisContext], dict[str, Any]]:
    """The ``run(spec, ctx)`` function of an analysis kind."""
    run: Callable[[Any, AnalysisContext], dict[str, Any]] = importlib.import_module(
        MODULES[kind]).run
    return run


__all__ = ["MODULES", "AnalysisContext", "ArtifactWriter", "runner", "skipped"]
