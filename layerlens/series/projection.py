"""Projections over a checkpoint series: each step's t-SNE starts from the previous step's.

Rauber et al. (2017) compare a network's hidden activity before and after
training by initialising the later t-SNE from the earlier embedding, so that a
point moves only as far as its neighbourhood changed and panels side by side
are comparable. Every checkpoint projects the same points (the projection
spec's stratified subsample of the series' samples).

References
----------
Rauber, P. E., Fadel, S. G., Falcão, A. X. & Telea, A. C. (2017). Visualizing
    the hidden activity of artificial neural networks. IEEE TVCG 23(1), 101-110.
"""

from __future__ import annotations

import numpy as np

from layerlens.analyses.projection.science import project_layer
from layerlens.analyses.projection.spec import ProjectionSpec
from layerlens.capture import Activations
from layerlens.data.dataset import stratified_subsample
from layerlens.models import select_layers
from layerlens.resolution import constant_at_resolution


class SeriesProjection:
    """The projection of every selected layer at every step, chained through ``init``.

    Attributes
    ----------
    labels : ndarray (n_points,), the projected points' classes.
    coordinates : per step, layer -> ndarray (n_points, 2) float32 (absent: not projectable).
    neighborhood_hit : per step, layer -> NH(k) of that step's projection.
    """

    def __init__(self, spec: ProjectionSpec, labels: np.ndarray) -> None:
        self.spec = spec
        self.keep = stratified_subsample(labels, spec.max_samples, seed=spec.seed)
        self.labels = labels if self.keep is None else labels[self.keep]
        self.coordinates: list[dict[str, np.ndarray]] = []
        self.neighborhood_hit: list[dict[str, float]] = []
        self._previous: dict[str, np.ndarray] = {}

    def add(self, activations: Activations, *, device: str = "cpu") -> None:
        """Project this step's layers (those the spec selects), each from its last embedding."""
        captured = [entry.info for entry in activations.layers.values()]
        coordinates: dict[str, np.ndarray] = {}
        hits: dict[str, float] = {}
        for info in select_layers(captured, self.spec.layers):
            values = activations.layers[info.name].values
            values = values if self.keep is None else values[self.keep]
            if (not np.isfinite(values).all()
                    or constant_at_resolution(values.min(axis=0), values.max(axis=0)).all()):
                continue
            method = "pca" if values.shape[1] == 1 else self.spec.method
            result = project_layer(values, self.labels, method=method, k=self.spec.k,
                                   seed=self.spec.seed, device=device,
                                   init=self._previous.get(info.name) if method == "tsne"
                                   else None)
            self._previous[info.name] = result.coordinates
            coordinates[info.name] = result.coordinates
            hits[info.name] = float(result.neighborhood_hit)
        self.coordinates.append(coordinates)
        self.neighborhood_hit.append(hits)

    def matrix(self, layers: list[str]) -> list[list[float | None]]:
        """NH as ``[step][layer]``, null where a layer was not projected."""
        return [[hits.get(name) for name in layers] for hits in self.neighborhood_hit]
