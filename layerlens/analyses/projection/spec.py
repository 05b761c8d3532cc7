"""The projection's spec entry and report section (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from layerlens.analyses.sections import FailedLayer, SkippedLayer, SpecEntry, Strict


class ProjectionSpec(SpecEntry):
    """``{"kind": "projection", ...}``: each layer drawn in 2-D, coloured by class."""

    kind: Literal["projection"]
    method: Literal["tsne", "pca", "umap"] = "tsne"
    k: int = Field(default=6, ge=1, description="neighbourhood size of both scores")
    max_samples: int | None = Field(default=None, ge=2,
                                    description="project a class-stratified subsample")


class ProjectedLayer(Strict):
    """One projected layer: its scores, picture and coordinates."""

    layer: str
    method: Literal["tsne", "pca", "umap"]
    neighborhood_hit: float = Field(ge=0.0, le=1.0)
    trustworthiness: float = Field(ge=0.0, le=1.0)
    n_features: int
    pca_preprocessing: int | None = Field(
        description="principal components the method ran on, when the layer was reduced")
    image: str
    coordinates: str = Field(description="(n_points, 2) float32 .npy artifact")
    perplexity: float | None = Field(default=None, description="t-SNE's perplexity")
    n_neighbors: float | None = Field(default=None, description="UMAP's neighbours")
    note: str | None = Field(default=None, description="how a layer of one feature is drawn")


class ProjectionSection(Strict):
    """``analyses.projection`` of report.json."""

    method: Literal["tsne", "pca", "umap"]
    k: int
    n_points: int
    standardized: bool
    pca_preprocessing: int | None
    trustworthiness_space: str
    subsampled_from: int | None = None
    subsample: str | None = None
    seed: int | None = None
    sample_indices: str | None = Field(default=None, description=".npy of the projected rows")
    labels: str | None = Field(
        default=None, description=".npy of the projected rows' class indices into class_names")
    class_names: list[str] | None = Field(
        default=None, description="the dataset's class names (hover labels of the page)")
    layers: list[ProjectedLayer | SkippedLayer | FailedLayer]
    complete: bool
