"""The projection's report section: one scatter and two scores per selected layer."""

from __future__ import annotations

import numpy as np

from layerlens.analyses.base import AnalysisContext, each_layer
from layerlens.analyses.projection.figures import scatter_figure
from layerlens.analyses.projection.science import PCA_PREPROCESSING, project_layer
from layerlens.analyses.projection.spec import ProjectedLayer, ProjectionSection, ProjectionSpec
from layerlens.analyses.sections import SkippedLayer
from layerlens.capture import LayerActivations
from layerlens.data.dataset import stratified_subsample
from layerlens.errors import InputError
from layerlens.resolution import constant_at_resolution

ONE_FEATURE_NOTE = ("one feature: drawn by PCA, the first axis is the centred value and the "
                    "second 0 (t-SNE and UMAP need two)")


def _unusable(values: np.ndarray) -> str | None:
    if not np.isfinite(values).all():
        return "activations contain NaN or infinite values"
    if constant_at_resolution(values.min(axis=0), values.max(axis=0)).all():
        return ("activations are the same for every sample at float32 resolution (any "
                "variation is rounding): nothing to project")
    return None


def run(spec: ProjectionSpec, ctx: AnalysisContext) -> ProjectionSection:
    """The ``analyses.projection`` report section."""
    labels_all = ctx.activations.y
    keep = stratified_subsample(labels_all, spec.max_samples, seed=spec.seed)
    labels = labels_all if keep is None else labels_all[keep]
    n = len(labels)
    if not spec.k < n / 2:
        raise InputError(f"projection.k must be below half the number of points ({n}), "
                         f"got {spec.k}")
    chosen = ctx.layers(spec.layers)

    def project(captured: LayerActivations) -> ProjectedLayer | SkippedLayer:
        name = captured.info.name
        values = captured.values if keep is None else captured.values[keep]
        reason = _unusable(values)
        if reason is not None:
            return SkippedLayer(layer=name, skipped=reason)
        one_feature = values.shape[1] == 1
        method = "pca" if one_feature else spec.method
        result = project_layer(values, labels, method=method, k=spec.k, seed=spec.seed,
                               device=ctx.device)
        figure = scatter_figure(result.coordinates, labels, ctx.dataset.class_names,
                                layer=name, method=method, k=spec.k,
                                neighborhood_hit=result.neighborhood_hit,
                                trustworthiness=result.trustworthiness)
        return ProjectedLayer(
            layer=name, method=method,
            neighborhood_hit=float(result.neighborhood_hit),
            trustworthiness=float(result.trustworthiness),
            n_features=int(values.shape[1]), pca_preprocessing=result.pca_preprocessing,
            image=ctx.artifacts.png(figure, "projection", spec.method, name),
            coordinates=ctx.artifacts.npy(result.coordinates, "projection", spec.method, name),
            note=ONE_FEATURE_NOTE if one_feature else None,
            **{key: float(value) for key, value in result.parameters.items()})

    def metrics(row: ProjectedLayer | SkippedLayer) -> dict[str, float]:
        if not isinstance(row, ProjectedLayer):
            return {}
        return {"neighborhood_hit": row.neighborhood_hit,
                "trustworthiness": row.trustworthiness}

    rows = each_layer(ctx, chosen, project, metrics)
    section = ProjectionSection(
        method=spec.method, k=spec.k, n_points=n, standardized=False,
        pca_preprocessing=None if spec.method == "pca" else PCA_PREPROCESSING,
        trustworthiness_space="the layer's stored activations",
        layers=rows, complete=len(rows) == len(chosen))
    if keep is not None:
        section.subsampled_from, section.subsample = len(labels_all), "stratified by class"
        section.seed = spec.seed
        section.sample_indices = ctx.artifacts.npy(keep, "projection", "sample_indices")
    section.labels = ctx.artifacts.npy(labels.astype(np.int64), "projection", "labels")
    section.class_names = [str(name) for name in ctx.dataset.class_names]
    return section
