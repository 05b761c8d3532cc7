"""Keep captured activations within a memory budget.

Large layers are reduced batch by batch while they are captured: a spatial
map ``(C, H, W)`` by its spatial mean to ``(C,)``, any other layer by a
seeded sparse random projection to at most ``max_features`` features, which
preserves pairwise distances up to a small distortion (Johnson-Lindenstrauss;
Li, Hastie & Church 2006). The plan reduces the largest layers first until
the total fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.random_projection import SparseRandomProjection

from layerlens.errors import InputError
from layerlens.models.base import LayerInfo
from layerlens.options import DEFAULT_MAX_FEATURES, DEFAULT_MEMORY_BUDGET

BYTES_PER_VALUE = 4  # activations are stored as float32


@dataclass(frozen=True)
class Reduction:
    """How one layer's activations were reduced.

    ``method`` is ``spatial_mean`` or ``random_projection``; ``to`` is the
    stored feature count per sample.
    """

    method: Literal["spatial_mean", "random_projection"]
    from_shape: tuple[int, ...]
    to: int
    seed: int | None = None

    def make(self) -> _Reducer:
        if self.method == "spatial_mean":
            return _SpatialMean()
        return _Projection(int(np.prod(self.from_shape)), self.to, self.seed or 0)


class _SpatialMean:
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return batch.reshape(batch.shape[0], batch.shape[1], -1).mean(axis=2)


class _Projection:
    def __init__(self, n_features: int, n_components: int, seed: int) -> None:
        self._projection = SparseRandomProjection(n_components=n_components, random_state=seed)
        self._projection.fit(np.zeros((1, n_features), dtype=np.float32))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        flat = batch.reshape(batch.shape[0], -1)
        return np.asarray(self._projection.transform(flat), dtype=np.float32)


_Reducer = _SpatialMean | _Projection


def plan_reductions(
    layers: Sequence[LayerInfo],
    n_samples: int,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    max_features: int = DEFAULT_MAX_FEATURES,
    spatial: Literal["mean", "projection"] = "mean",
    seed: int = 0,
) -> dict[str, Reduction]:
    """Reductions that bring ``n_samples`` x all layers' features under ``memory_budget`` bytes.

    Layers are reduced largest first; spatial maps (rank >= 2) by their
    spatial mean when ``spatial="mean"``, everything else (and spatial maps
    when ``spatial="projection"``) by projection to ``max_features``.
    """
    if memory_budget <= 0 or max_features <= 0:
        raise InputError("memory_budget and max_features must be positive")
    features = {layer.name: layer.n_features for layer in layers}
    plan: dict[str, Reduction] = {}

    def total() -> int:
        return n_samples * sum(features.values()) * BYTES_PER_VALUE

    for layer in sorted(layers, key=lambda lay: lay.n_features, reverse=True):
        if total() <= memory_budget:
            break
        if spatial == "mean" and len(layer.shape) >= 2:
            plan[layer.name] = Reduction("spatial_mean", layer.shape, layer.shape[0])
        elif layer.n_features > max_features:
            plan[layer.name] = Reduction("random_projection", layer.shape, max_features, seed)
        else:
            continue
        features[layer.name] = plan[layer.name].to
    if total() > memory_budget:
        need = total() / 1024**2
        raise InputError(
            f"activations of {len(layers)} layers x {n_samples} samples need {need:.0f} MiB "
            f"even after reduction, over the {memory_budget / 1024**2:.0f} MiB budget; raise "
            "memory_budget, lower max_samples or select fewer layers",
            options=("memory_budget", "max_samples"))
    return plan
