"""Capture every selected layer's activations over a dataset, batch by batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerlens.activation_store import ActivationStore, StoredRows
from layerlens.data import Dataset
from layerlens.errors import ShapeMismatchError
from layerlens.models.base import LayerInfo, ProbedModel
from layerlens.options import DEFAULT_MAX_FEATURES, DEFAULT_MEMORY_BUDGET
from layerlens.reduction import (
    Reduction,
    SequencePooling,
    feature_map_layers,
    plan_reductions,
    sequence_layers,
)
from layerlens.resolution import constant_at_resolution

#: ``(step, total, metrics) -> stop?`` — called after each batch; True stops early.
ProgressCallback = Callable[[int, int, dict[str, float]], bool | None]


@dataclass
class UnitStats:
    """Streaming per-unit statistics of one layer, over unreduced activations.

    Attributes
    ----------
    count : samples seen.
    total, total_sq : sums of values and squares over samples and units.
    unit_min, unit_max : ndarray (n_features,), per-unit extremes.
    """

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    unit_min: np.ndarray | None = None
    unit_max: np.ndarray | None = None

    def update(self, flat: np.ndarray) -> None:
        values = flat.astype(np.float64)
        self.count += len(flat)
        self.total += float(values.sum())
        self.total_sq += float(np.square(values).sum())
        low, high = flat.min(axis=0), flat.max(axis=0)
        self.unit_min = low if self.unit_min is None else np.minimum(self.unit_min, low)
        self.unit_max = high if self.unit_max is None else np.maximum(self.unit_max, high)

    def summary(self) -> dict[str, float]:
        """``mean``, ``std`` over all values; ``dead_fraction``: share of units constant over
        the samples at float32 resolution (:func:`layerlens.resolution.constant_at_resolution`)."""
        assert self.unit_min is not None and self.unit_max is not None
        n_values = self.count * self.unit_min.size
        mean = self.total / n_values
        variance = max(self.total_sq / n_values - mean**2, 0.0)
        dead = np.mean(constant_at_resolution(self.unit_min, self.unit_max))
        return {"mean": mean, "std": float(np.sqrt(variance)), "dead_fraction": float(dead)}


@dataclass
class LayerActivations:
    """One layer's captured activations, ``stored`` in memory or on disk.

    ``values`` has shape (n_samples, n_stored_features), float32: the layer
    flattened, or reduced as ``reduction`` says.
    """

    info: LayerInfo
    stored: np.ndarray | StoredRows
    stats: UnitStats
    reduction: Reduction | None = None

    @property
    def values(self) -> np.ndarray:
        """The rows; a read-only memory map, made afresh on each access, when on disk."""
        return self.stored if isinstance(self.stored, np.ndarray) else self.stored.open()


@dataclass
class Activations:
    """All captured layers (forward order) with the dataset labels."""

    layers: dict[str, LayerActivations]
    y: np.ndarray
    n_samples: int
    complete: bool = True
    batch_size: int = 0
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    store: ActivationStore | None = None

    def close(self) -> None:
        """Delete the layers spilled to disk, if any."""
        if self.store is not None:
            self.store.close()


def _check_fit(model: ProbedModel, dataset: Dataset) -> None:
    need = int(np.prod(model.input_spec.shape))
    have = int(np.prod(dataset.x.shape[1:]))
    if need != have:
        raise ShapeMismatchError(
            f"the model takes samples of shape {model.input_spec.shape} ({need} values) but "
            f"{dataset.ref} has samples of shape {dataset.x.shape[1:]} ({have} values)")


#: One batch's unreduced activations may take this share of the memory budget.
BATCH_SHARE_OF_BUDGET = 1 / 8


def fitting_batch_size(layers: Sequence[LayerInfo], batch_size: int, memory_budget: int) -> int:
    """``batch_size``, lowered (to 1 at least) until one batch of every layer's unreduced
    float32 activations fits in :data:`BATCH_SHARE_OF_BUDGET` of ``memory_budget`` bytes:
    a ResNet-50 at 224x224 holds about 100 MB of activations per sample."""
    per_sample = 4 * sum(int(np.prod(layer.shape)) for layer in layers)
    fits = int(memory_budget * BATCH_SHARE_OF_BUDGET) // max(1, per_sample)
    return max(1, min(batch_size, fits))


def capture_activations(
    model: ProbedModel,
    dataset: Dataset,
    *,
    layers: Sequence[LayerInfo] | None = None,
    batch_size: int = 256,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    max_features: int = DEFAULT_MAX_FEATURES,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    sequence_pooling: SequencePooling = "mean",
    spill_folder: str | Path | None = None,
) -> Activations:
    """Run the dataset through ``model`` once, keeping every selected layer.

    Each batch is ONE forward pass returning all selected layers; layers the
    memory plan names are reduced as they arrive, and per-unit statistics
    are accumulated on the unreduced values; a token model's sequence layers ``(L, D)``
    are pooled over positions by ``sequence_pooling``. The dataset's per-sample other
    inputs are fed with their samples. If ``progress`` returns True the
    capture stops and the samples seen so far are returned with
    ``complete=False``. Stored rows beyond a share of ``memory_budget`` are written to a
    temporary folder in ``spill_folder`` (:mod:`layerlens.activation_store`), deleted by
    :meth:`Activations.close`.
    """
    _check_fit(model, dataset)
    chosen = list(model.layers if layers is None else layers)
    plan = plan_reductions(chosen, dataset.n_samples, memory_budget=memory_budget,
                           max_features=max_features, seed=seed,
                           feature_maps=feature_map_layers(model.layers),
                           sequences=dict.fromkeys(sequence_layers(model.layers,
                                                                   model.input_spec),
                                                   sequence_pooling))
    reducers = {name: reduction.make() for name, reduction in plan.items()}
    batch_size = fitting_batch_size(chosen, batch_size, memory_budget)
    names = [layer.name for layer in chosen]
    store = ActivationStore(memory_budget, spill_folder)
    stats = {name: UnitStats() for name in names}
    total = -(-dataset.n_samples // batch_size)
    seen, complete = 0, True
    for step, (x, others) in enumerate(dataset.input_batches(batch_size), start=1):
        outputs = model.capture(model.input_spec.preprocess(x), names, others)
        for name in names:
            flat = outputs[name].reshape(len(x), -1).astype(np.float32, copy=False)
            stats[name].update(flat)
            reducer = reducers.get(name)
            store.append(name, flat if reducer is None else reducer(outputs[name]))
        seen += len(x)
        if progress is not None and progress(step, total, {"samples": float(seen)}):
            complete = seen == dataset.n_samples
            break
    captured = {}
    for layer in chosen:  # one layer's batches at a time: memory peaks at all + one layer
        captured[layer.name] = LayerActivations(layer, store.finish(layer.name),
                                                stats[layer.name], plan.get(layer.name))
    return Activations(captured, dataset.y[:seen], seen, complete, batch_size,
                       memory_budget, store)
