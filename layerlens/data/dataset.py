"""The in-memory dataset every analysis reads: samples, integer labels, splits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from layerlens.errors import DatasetError, InputError
from layerlens.models.inputs import NO_INPUTS, InputArrays


@dataclass(frozen=True)
class Dataset:
    """Samples with class labels.

    Attributes
    ----------
    ref : the reference it was resolved from (``builtin:digits``, a path...).
    x : ndarray, shape (n, *sample_shape), float32, in the data's natural units (token
        ids too: float32 holds every integer up to 2**24 exactly; a model input that takes
        integers gets them back as integers).
    y : ndarray, shape (n,), int64 class indices ``0..n_classes-1``.
    class_names : the original label of each class index.
    image_shape : natural (C, H, W) layout when the samples are flattened
        images (``(1, 8, 8)`` for digits), else None.
    inputs : arrays for the model's other inputs (an attention mask, an RNN state), per
        sample (first axis n, subsampled and batched with ``x``) or shared by every sample.
    """

    ref: str
    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    image_shape: tuple[int, ...] | None = None
    inputs: InputArrays = NO_INPUTS

    @classmethod
    def from_arrays(cls, ref: str, x: np.ndarray, labels: np.ndarray,
                    image_shape: tuple[int, ...] | None = None,
                    others: dict[str, np.ndarray] | None = None) -> Dataset:
        """Validate arrays and encode labels as ``0..k-1`` (sorted original values).

        ``others``: arrays for the model's other inputs by name; one whose first axis has
        one entry per sample is per sample, any other one value shared by every sample.
        """
        x = np.asarray(x)
        labels = np.asarray(labels)
        if labels.ndim == 2 and 1 in labels.shape:  # a row or column vector, as MATLAB saves
            labels = labels.reshape(-1)
        if x.ndim < 2 or len(x) == 0:
            raise DatasetError(f"{ref}: x must have shape (n_samples, ...) with n_samples > 0, "
                               f"got {x.shape}")
        if x.dtype.kind not in "fiub":
            raise DatasetError(f"{ref}: x must be numeric, got dtype {x.dtype}")
        if labels.ndim != 1 or len(labels) != len(x):
            raise DatasetError(f"{ref}: y must have one label per sample ({len(x)}), "
                               f"got shape {labels.shape}")
        if labels.dtype.kind == "f" and np.all(np.isfinite(labels) & (labels == np.round(labels))):
            labels = labels.astype(np.int64)
        if labels.dtype.kind not in "iubUS":
            raise DatasetError(f"{ref}: y must hold integer or string class labels, "
                               f"got dtype {labels.dtype}")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise DatasetError(f"{ref}: x contains NaN or infinite values")
        classes, y = np.unique(labels, return_inverse=True)
        return cls(ref, x, y.astype(np.int64), tuple(str(c) for c in classes), image_shape,
                   _other_inputs(ref, others or {}, len(x)))

    @property
    def n_samples(self) -> int:
        return len(self.x)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def sample_shapes(self) -> list[tuple[int, ...]]:
        """Candidate per-sample shapes for a model: stored layout, then image layout."""
        shapes = [tuple(self.x.shape[1:])]
        if self.image_shape is not None and self.image_shape not in shapes:
            shapes.append(self.image_shape)
        return shapes

    def split(self, *, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic train/test indices, stratified by class where possible."""
        from sklearn.model_selection import train_test_split

        if not 0.0 < test_fraction < 1.0:
            raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
        indices = np.arange(self.n_samples)
        counts = np.bincount(self.y)
        n_test = int(np.ceil(test_fraction * self.n_samples))
        stratify = self.y if counts.min() >= 2 and n_test >= self.n_classes else None
        train, test = train_test_split(indices, test_size=test_fraction, random_state=seed,
                                       stratify=stratify)
        return np.sort(train), np.sort(test)

    def subsample(self, max_samples: int | None, *, seed: int = 0) -> Dataset:
        """At most ``max_samples`` samples, drawn stratified and seeded, in original order."""
        keep = stratified_subsample(self.y, max_samples, seed=seed)
        if keep is None:
            return self
        return Dataset(self.ref, self.x[keep], self.y[keep], self.class_names, self.image_shape,
                       self.inputs.rows(keep))

    def batches(self, batch_size: int,
                indices: Sequence[int] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(x, y)`` batches of at most ``batch_size`` samples, in order."""
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        order = np.arange(self.n_samples) if indices is None else np.asarray(indices)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            yield self.x[chunk], self.y[chunk]

    def input_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """``(x, others)`` batches in order: the samples and their rows of the per-sample
        other inputs (``name -> (b, ...)``), for :meth:`ProbedModel.capture`."""
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        for start in range(0, self.n_samples, batch_size):
            rows = slice(start, start + batch_size)
            yield self.x[rows], {k: v[rows] for k, v in self.inputs.per_sample.items()}


def _other_inputs(ref: str, arrays: dict[str, np.ndarray], n: int) -> InputArrays:
    """Numeric arrays for the model's other inputs: per sample when the first axis has ``n``
    entries, else shared."""
    per_sample: dict[str, np.ndarray] = {}
    shared: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.dtype.kind not in "fiub":
            raise DatasetError(f"{ref}: array '{name}' (for the model input '{name}') must be "
                               f"numeric, got dtype {array.dtype}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise DatasetError(f"{ref}: array '{name}' contains NaN or infinite values")
        (per_sample if array.ndim >= 1 and len(array) == n else shared)[name] = array
    return InputArrays(per_sample, shared)


def stratified_subsample(labels: np.ndarray, max_samples: int | None, *,
                         seed: int = 0) -> np.ndarray | None:
    """Sorted row indices of a seeded, class-stratified subsample; None when all rows are kept.

    Each class keeps about its share of ``max_samples`` (scikit-learn's
    ``train_test_split(stratify=...)``); falls back to a seeded uniform draw
    when a class has a single sample or there are fewer slots than classes.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    n = len(labels)
    if max_samples is None or max_samples >= n:
        return None
    if max_samples < 1:
        raise InputError(f"max_samples must be at least 1, got {max_samples}")
    counts = np.unique(labels, return_counts=True)[1]
    if max_samples >= len(counts) and n - max_samples >= len(counts) and counts.min() >= 2:
        keep, _ = train_test_split(np.arange(n), train_size=max_samples, random_state=seed,
                                   stratify=labels)
    else:
        keep = np.random.default_rng(seed).choice(n, max_samples, replace=False)
    return np.sort(np.asarray(keep, dtype=np.int64))
