"""The similarity report section: CKA of every layer pair, of one model or of two."""

from __future__ import annotations

import numpy as np

from layerlens.analyses.base import AnalysisContext, Reference
from layerlens.analyses.similarity.figures import heatmap_figure
from layerlens.analyses.similarity.science import CkaResult, cka_matrix
from layerlens.analyses.similarity.spec import (
    BestMatch,
    ComparedModel,
    SimilaritySection,
    SimilaritySpec,
    UndefinedLayer,
)
from layerlens.capture import LayerActivations
from layerlens.data.dataset import stratified_subsample
from layerlens.errors import LayerSelectionError
from layerlens.models import select_layers

#: CKA values this close count as a tie when choosing a layer's best match (a ReLU and the
#: Flatten after it hold the same values and differ by rounding).
TIE = 1e-9


def run(spec: SimilaritySpec, ctx: AnalysisContext) -> SimilaritySection:
    """The ``analyses.similarity`` report section."""
    reference = ctx.reference
    layers_a = ctx.layers(spec.layers)
    layers_b = None if reference is None else _reference_layers(reference, spec.layers)
    n = ctx.activations.n_samples
    if reference is not None:  # a stopped capture keeps fewer samples
        n = min(n, reference.activations.n_samples)
    keep = stratified_subsample(ctx.activations.y[:n], spec.max_samples, seed=spec.seed)
    rows = np.arange(n) if keep is None else keep
    result = cka_matrix(
        [layer.values[rows] for layer in layers_a],
        None if layers_b is None else [layer.values[rows] for layer in layers_b],
        debiased=spec.debiased, device=ctx.device,
        progress=lambda step, total, metrics: ctx.report_progress(step, total, **metrics))
    names_a = [layer.info.name for layer in layers_a]
    names_b = names_a if layers_b is None else [layer.info.name for layer in layers_b]
    estimator = "debiased linear CKA" if spec.debiased else "linear CKA"
    other = "this model" if reference is None else reference.name
    figure = heatmap_figure(
        result.matrix, names_a, names_b, row_title="this model: layer (forward order)",
        col_title=f"{other}: layer (forward order)", value_label=estimator,
        title=f"{estimator[0].upper()}{estimator[1:]} between layers, {len(rows)} samples")
    image = ctx.artifacts.png(figure, "similarity", "cka",
                              "debiased" if spec.debiased else "", "" if reference is None
                              else "compare")
    section = SimilaritySection(
        method=spec.method, debiased=spec.debiased,
        shown=_shown(spec, reference, len(names_a), len(names_b), len(rows)),
        layers_a=names_a, layers_b=names_b,
        matrix=[[None if np.isnan(value) else float(value) for value in row]
                for row in result.matrix],
        image=image,
        compared_to=None if reference is None else ComparedModel(
            name=reference.name, sha256=reference.model.sha256,
            format=reference.model.format),
        n_samples=len(rows), subsampled_from=None if keep is None else n, seed=spec.seed,
        undefined=_undefined(result, names_a, names_b, symmetric=reference is None),
        best_matches=None, threshold=None, specific_from=None, complete=result.complete)
    if reference is not None:
        section.best_matches = _best_matches(result.matrix, names_a, names_b)
        section.threshold = spec.threshold
        section.specific_from = next(
            (match.layer for match in section.best_matches
             if match.cka is not None and match.cka < spec.threshold), None)
    return section


def _reference_layers(reference: Reference, patterns: list[str] | None
                      ) -> list[LayerActivations]:
    """The other model's captured layers that the spec's ``layers`` patterns select."""
    captured = [entry.info for entry in reference.activations.layers.values()]
    try:
        chosen = select_layers(captured, patterns)
    except LayerSelectionError as exc:
        raise LayerSelectionError(f"{reference.name} (compare_to): {exc}") from exc
    return [reference.activations.layers[info.name] for info in chosen]


def _shown(spec: SimilaritySpec, reference: Reference | None, n_a: int, n_b: int,
           n_samples: int) -> str:
    """What the matrix shows, in one sentence."""
    estimator = ("debiased linear CKA (Kornblith et al. 2019; the unbiased HSIC of Song et "
                 "al. 2012)" if spec.debiased else
                 "linear CKA (Kornblith et al. 2019; the biased HSIC)")
    pairs = (f"every pair of this model's {n_a} layers" if reference is None else
             f"each of this model's {n_a} layers (rows) and each of the {n_b} layers of "
             f"{reference.name} (columns)")
    scale = ("1 is the same representation up to rotation and scale, values near 0 are "
             "unrelated ones (they may fall slightly below 0)" if spec.debiased else
             "1 is the same representation up to rotation and scale, 0 unrelated ones; wide "
             "unrelated layers score above 0 at few samples (use debiased)")
    return (f"{estimator[0].upper()}{estimator[1:]} between {pairs}, "
            f"on the same {n_samples} samples: a similarity, {scale}.")


def _undefined(result: CkaResult, names_a: list[str], names_b: list[str], *,
               symmetric: bool) -> list[UndefinedLayer]:
    rows = [UndefinedLayer(model="a", layer=names_a[i], reason=reason)
            for i, reason in sorted(result.undefined_rows.items())]
    if symmetric:
        return rows
    return rows + [UndefinedLayer(model="b", layer=names_b[j], reason=reason)
                   for j, reason in sorted(result.undefined_cols.items())]


def _best_matches(matrix: np.ndarray, names_a: list[str], names_b: list[str]
                  ) -> list[BestMatch]:
    """For each row, the column of the largest defined CKA; on a tie (within
    :data:`TIE`) the layer of the same name, else the first."""
    matches = []
    for name, row in zip(names_a, matrix, strict=True):
        if np.isnan(row).all():
            matches.append(BestMatch(layer=name, match=None, cka=None))
            continue
        tied = [names_b[j] for j in np.flatnonzero(row >= np.nanmax(row) - TIE)]
        match = name if name in tied else tied[0]
        matches.append(BestMatch(layer=name, match=match,
                                 cka=float(row[names_b.index(match)])))
    return matches
