"""Keep captured activations within a memory budget, respecting each layer's layout.

Large layers are reduced batch by batch while they are captured: a
channels-first feature map ``(C, *spatial)`` by its mean over the spatial axes
to ``(C,)``, any other layer by a seeded sparse random projection to at most
``max_features`` features, which preserves pairwise distances up to a small
distortion (Johnson-Lindenstrauss; Li, Hastie & Church 2006) and needs no
layout. The plan reduces the largest layers first until the total fits.

Which layers are feature maps (:func:`feature_map_layers`) is decided from what the
probed model knows of a layer, its operator and its shape, never from the
rank alone: a ``(L, D)`` sequence, a ``(T, vocab)`` softmax or ``(heads, L, L)``
attention weights have rank 2 or 3 too, and a mean over their last axes
would average the features away (over a softmax it is the constant
``1 / vocab``).

A token model's sequence layers ``(L, D)`` (:func:`sequence_layers`) are always pooled
over their ``L`` positions, by the mean, the first or the last position
(``sequence_pooling``), to ``D`` features: never over the features.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.random_projection import SparseRandomProjection

from layerlens.errors import InputError
from layerlens.models.base import InputSpec, LayerInfo
from layerlens.options import DEFAULT_MAX_FEATURES, DEFAULT_MEMORY_BUDGET

BYTES_PER_VALUE = 4  # activations are stored as float32
SequencePooling = Literal["mean", "first", "last"]

#: Operators (ONNX) and module types (torch) whose output is a channels-first feature map:
#: convolution, pooling, batch/instance/group normalisation, resampling. Case matters:
#: transformers' ``Conv1D`` is a linear layer on ``(L, D)``, torch's ``Conv1d`` a convolution.
_FEATURE_MAP_OPS = re.compile(
    r"(Lazy)?Conv(Transpose)?[123]d|Conv|ConvTranspose|ConvInteger|QLinearConv|DeformConv"
    r"|(Adaptive|Fractional)?(Max|Avg|LP)Pool[123]d|MaxUnpool[123]d"
    r"|(Global)?(Max|Average|Lp)Pool|MaxUnpool|MaxRoiPool|QLinear(Global)?AveragePool"
    r"|(Lazy)?(Batch|Instance)Norm[123]d|SyncBatchNorm|GroupNorm|LocalResponseNorm"
    r"|BatchNormalization|InstanceNormalization|GroupNormalization|LRN"
    r"|Upsample|Upsampling(Nearest|Bilinear)2d|Pixel(Un)?Shuffle|Resize|DepthToSpace"
    r"|SpaceToDepth|Dropout[123]d")
#: Operators whose output is not a feature map whatever its shape: they mix or reorder the
#: last axes (matrix products, softmax, layer norm, attention, embeddings, recurrences,
#: transposes and reshapes).
_NOT_FEATURE_MAP_OPS = re.compile(
    r"MatMul(Integer)?|QLinearMatMul|Gemm|(Lazy)?Linear|Bilinear"
    r"|(Log)?Softmax|Softmin|Hardmax|(Simplified|Skip)?LayerNorm(alization)?"
    r"|RMSNorm|(MultiHead)?Attention|Embedding(Bag)?"
    r"|Gather(Elements|ND)?|Transpose|Permute|Reshape|Flatten|Unflatten|View|Squeeze"
    r"|Unsqueeze|Einsum|LSTM|GRU|RNN|TopK|ArgMax|ArgMin|Reduce\w*", re.IGNORECASE)


@dataclass(frozen=True)
class Reduction:
    """How one layer's activations were reduced.

    ``method`` is ``spatial_mean``, ``random_projection`` or ``sequence_mean`` /
    ``sequence_first`` / ``sequence_last`` (a sequence ``(L, D)`` pooled over its
    positions); ``to`` is the stored feature count per sample.
    """

    method: Literal["spatial_mean", "random_projection", "sequence_mean", "sequence_first",
                    "sequence_last"]
    from_shape: tuple[int, ...]
    to: int
    seed: int | None = None

    def make(self) -> _Reducer:
        if self.method == "spatial_mean":
            return _SpatialMean()
        if self.method.startswith("sequence_"):
            return _SequencePool(self.method.removeprefix("sequence_"))
        return _Projection(int(np.prod(self.from_shape)), self.to, self.seed or 0)


class _SpatialMean:
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return batch.reshape(batch.shape[0], batch.shape[1], -1).mean(axis=2)


class _SequencePool:
    """(n, L, D) -> (n, D): the mean over positions, or the first or last position."""

    def __init__(self, pooling: str) -> None:
        self._pooling = pooling

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self._pooling == "first":
            return np.ascontiguousarray(batch[:, 0], dtype=np.float32)
        if self._pooling == "last":
            return np.ascontiguousarray(batch[:, -1], dtype=np.float32)
        return batch.mean(axis=1, dtype=np.float64).astype(np.float32)


class _Projection:
    def __init__(self, n_features: int, n_components: int, seed: int) -> None:
        self._projection = SparseRandomProjection(n_components=n_components, random_state=seed)
        self._projection.fit(np.zeros((1, n_features), dtype=np.float32))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        flat = batch.reshape(batch.shape[0], -1)
        return np.asarray(self._projection.transform(flat), dtype=np.float32)


_Reducer = _SpatialMean | _SequencePool | _Projection


def sequence_layers(layers: Sequence[LayerInfo], input_spec: InputSpec) -> set[str]:
    """Names of a token model's sequence layers: ``(L, D)`` where ``L`` is the length of
    the integer input ``(L,)`` (a transformer's hidden states, per position). None when
    the input is not a sequence of token ids."""
    if not input_spec.discrete or len(input_spec.shape) != 1:
        return set()
    length = input_spec.shape[0]
    maps = feature_map_layers(layers)
    return {layer.name for layer in layers if len(layer.shape) == 2
            and layer.shape[0] == length and layer.name not in maps}


def feature_map_layers(layers: Sequence[LayerInfo]) -> set[str]:
    """Names of the layers whose output is a channels-first feature map ``(C, *spatial)``.

    The rule, in forward order: a layer of rank >= 2 is a feature map when its
    operator makes one (convolution, pooling, batch/instance/group norm,
    resampling: ``Conv``, ``MaxPool``, ``BatchNormalization``, ``Resize``;
    ``Conv2d``, ``AvgPool2d``, ``BatchNorm2d``, ``Upsample``), or when its
    operator is elementwise or unknown (``Relu``, ``Add``, a custom block) and
    the nearest earlier layer with the same rank and trailing dimensions
    ``shape[1:]`` is a feature map (layout passes through ``Relu`` and along a
    channel ``Concat``). Never after a matrix product, softmax, layer norm,
    attention, embedding, recurrence, transpose or reshape, and never a
    vector ``(C,)`` or scalar ``()``.

    Parameters
    ----------
    layers : sequence of LayerInfo
        Every layer of the model, in forward order (a selection may miss the
        convolution a ``Relu`` inherits its layout from).

    Returns
    -------
    set of str
    """
    maps: set[str] = set()
    for index, layer in enumerate(layers):
        if len(layer.shape) < 2 or _NOT_FEATURE_MAP_OPS.fullmatch(layer.op):
            continue
        if _FEATURE_MAP_OPS.fullmatch(layer.op):
            maps.add(layer.name)
            continue
        for earlier in reversed(layers[:index]):
            if len(earlier.shape) == len(layer.shape) and earlier.shape[1:] == layer.shape[1:]:
                if earlier.name in maps:
                    maps.add(layer.name)
                break
    return maps


def plan_reductions(
    layers: Sequence[LayerInfo],
    n_samples: int,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    max_features: int = DEFAULT_MAX_FEATURES,
    spatial: Literal["mean", "projection"] = "mean",
    seed: int = 0,
    feature_maps: Collection[str] | None = None,
    sequences: Mapping[str, SequencePooling] | None = None,
) -> dict[str, Reduction]:
    """Reductions that bring ``n_samples`` x all layers' features under ``memory_budget`` bytes.

    ``sequences`` (layer name -> pooling) are pooled over positions whatever the budget.
    Other layers are reduced largest first; feature maps (``feature_maps``, default
    :func:`feature_map_layers` of ``layers``) by their spatial mean when
    ``spatial="mean"``, everything else (and feature maps when
    ``spatial="projection"``) by projection to ``max_features``.
    """
    maps = feature_map_layers(layers) if feature_maps is None else feature_maps
    if memory_budget <= 0 or max_features <= 0:
        raise InputError("memory_budget and max_features must be positive")
    features = {layer.name: layer.n_features for layer in layers}
    plan: dict[str, Reduction] = {}
    for layer in layers:
        if sequences and layer.name in sequences:
            pooled = Reduction(f"sequence_{sequences[layer.name]}",  # type: ignore[arg-type]
                               layer.shape, layer.shape[-1])
            plan[layer.name] = pooled
            features[layer.name] = pooled.to

    def total() -> int:
        return n_samples * sum(features.values()) * BYTES_PER_VALUE

    for layer in sorted(layers, key=lambda lay: lay.n_features, reverse=True):
        if total() <= memory_budget:
            break
        if layer.name in plan:
            continue
        if spatial == "mean" and layer.name in maps:
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
