"""Differentiable evaluation of ONNX graphs with torch operations.

Gradient-based analyses (saliency, activation maximisation) need gradients of
an ONNX model's values with respect to its input, but onnxruntime only runs
forward passes. Ready-made converters such as onnx2torch depend on
torchvision, which has no CPU build here. :class:`OnnxTorchGraph` therefore
interprets the graph node by node, mapping each operator to differentiable
torch calls. Availability is per value: a node it cannot run (listed by
:func:`unsupported_operators`) makes only the values computed from it
unavailable, and evaluating a value runs only the nodes it depends on.

Every operator is one small function ``fn(attrs, inputs) -> outputs``
registered in ``_OPS``; attribute values an operator does not implement are
rejected up front by the matching entry of ``_CHECKS``, never approximated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from layerlens.errors import (
    GradientUnavailableError,
    InputError,
    LayerSelectionError,
    one_line,
)

_DEFAULT_DOMAINS = ("", "ai.onnx")

_TORCH_DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
}

# Constant node attributes other than ``value``, with the dtype ONNX gives them.
_CONSTANT_ATTRIBUTES = {
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
}

# Node inputs: tensors, None for omitted optional ones (Any spares a None check per use).
_Inputs = list[Any]


@dataclass(frozen=True)
class _Attrs:
    """A node's attributes plus the context some operators depend on.

    Attributes
    ----------
    values : dict
        Attribute name -> value (strings decoded, tensors as numpy arrays).
    opset : int
        Opset version of the default domain.
    n_outputs : int
        Number of outputs the node declares, omitted trailing ones excluded.
    n_inputs : int
        Number of inputs the node gives, omitted trailing ones excluded.
    """

    values: Mapping[str, Any]
    opset: int
    n_outputs: int
    n_inputs: int = 0

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


_Op = Callable[[_Attrs, _Inputs], torch.Tensor | Sequence[torch.Tensor]]


@dataclass(frozen=True)
class _Step:
    """One non-Constant node, ready to run."""

    name: str
    op_type: str
    fn: _Op
    attrs: _Attrs
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


# ---------------------------------------------------------------- helpers


def _with_optional(inputs: _Inputs, count: int) -> _Inputs:
    """``inputs`` padded with None (omitted optional inputs) to ``count`` entries."""
    return (list(inputs) + [None] * count)[:count]


def _ints(inputs: _Inputs, index: int) -> list[int]:
    """The integers held by input ``index``; empty when that optional input is omitted."""
    if index < len(inputs) and inputs[index] is not None:
        return [int(v) for v in inputs[index].reshape(-1).tolist()]
    return []


def _attr_or_input(attrs: _Attrs, name: str, inputs: _Inputs, index: int) -> list[int]:
    """Integers given as attribute ``name`` (older opsets) or as input ``index`` (newer)."""
    value = attrs.get(name)
    return list(value) if value is not None else _ints(inputs, index)


def _torch_pad(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX-style per-axis padding as the ``F.pad`` list (last axis first)."""
    return [
        amount
        for begin, end in zip(reversed(begins), reversed(ends), strict=True)
        for amount in (begin, end)
    ]


def _pad_spatial(x: torch.Tensor, begins: list[int], ends: list[int], value: float) -> torch.Tensor:
    """``x`` padded on its trailing axes with ``value``; negative amounts crop."""
    if not any(begins) and not any(ends):
        return x
    return F.pad(x, _torch_pad(begins, ends), value=value)


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """A numpy array (as ``numpy_helper.to_array`` returns it) as a tensor of the same dtype."""
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.uint16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(array))


# ---------------------------------------------------------------- elementwise


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> _Op:
    return lambda attrs, inputs: fn(inputs[0])


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> _Op:
    return lambda attrs, inputs: fn(inputs[0], inputs[1])


def _variadic(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> _Op:
    return lambda attrs, inputs: reduce(fn, inputs)


def _div(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    a, b = inputs
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _pow(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    base, exponent = inputs
    return torch.pow(base, exponent).to(base.dtype)


def _mean(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    return reduce(torch.add, inputs) / len(inputs)


def _clip(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x, low, high = _with_optional(inputs, 3)
    low, high = attrs.get("min", low), attrs.get("max", high)
    return x if low is None and high is None else torch.clamp(x, low, high)


def _prelu(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x, slope = inputs
    return torch.where(x < 0, x * slope, x)


def _selu(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x = inputs[0]
    alpha = attrs.get("alpha", 1.67326319217681884765625)
    gamma = attrs.get("gamma", 1.05070102214813232421875)
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


def _hard_sigmoid(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    return torch.clamp(attrs.get("alpha", 0.2) * inputs[0] + attrs.get("beta", 0.5), 0.0, 1.0)


def _cast(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    return inputs[0].to(_TORCH_DTYPES[attrs.get("to")])


def _where(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    condition, x, y = inputs
    return torch.where(condition, x, y)


def _dropout(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    x = inputs[0]
    if attrs.n_outputs < 2:
        return x
    return x, torch.ones_like(x, dtype=torch.bool)



def _is_inf(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x = inputs[0]
    positive, negative = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    found = torch.zeros_like(x, dtype=torch.bool)
    if positive:
        found = found | torch.isposinf(x)
    if negative:
        found = found | torch.isneginf(x)
    return found


def _mod(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    """``fmod=1``: the sign of the dividend (C fmod); else that of the divisor (Python %)."""
    a, b = inputs
    return torch.fmod(a, b) if attrs.get("fmod", 0) else torch.remainder(a, b)

# ---------------------------------------------------------------- convolution and pooling

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVERAGE_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _spatial_pads(
    attrs: _Attrs,
    sizes: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> tuple[list[int], list[int]]:
    """Begin and end padding of each spatial axis, resolving ``auto_pad``."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    rank = len(sizes)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        totals = [
            max((-(-size // stride) - 1) * stride + (k - 1) * dilation + 1 - size, 0)
            for size, k, stride, dilation in zip(sizes, kernel, strides, dilations, strict=True)
        ]
        small = [total // 2 for total in totals]
        large = [total - half for total, half in zip(totals, small, strict=True)]
        return (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    pads = list(attrs.get("pads", [0] * 2 * rank))
    return pads[:rank], pads[rank:]


def _conv(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x, weight, bias = _with_optional(inputs, 3)
    rank = x.dim() - 2
    strides = attrs.get("strides", [1] * rank)
    dilations = attrs.get("dilations", [1] * rank)
    begins, ends = _spatial_pads(attrs, x.shape[2:], weight.shape[2:], strides, dilations)
    if begins != ends:
        x = _pad_spatial(x, begins, ends, 0.0)
        begins = [0] * rank
    return _CONV[rank](x, weight, bias, strides, begins, dilations, attrs.get("group", 1))


def _conv_transpose(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x, weight, bias = _with_optional(inputs, 3)
    rank = x.dim() - 2
    strides = attrs.get("strides", [1] * rank)
    dilations = attrs.get("dilations", [1] * rank)
    pads = [0] * 2 * rank if attrs.get("auto_pad") == "VALID" else attrs.get("pads", [0] * 2 * rank)
    output_padding = attrs.get("output_padding", [0] * rank)
    full = _CONV_TRANSPOSE[rank](x, weight, None, strides, 0, 0, attrs.get("group", 1), dilations)
    # Negative amounts crop the padding; output_padding appends positions that only get the bias.
    begins = [-pad for pad in pads[:rank]]
    ends = [extra - pad for extra, pad in zip(output_padding, pads[rank:], strict=True)]
    y = _pad_spatial(full, begins, ends, 0.0)
    return y if bias is None else y + bias.reshape(1, -1, *[1] * rank)


class _Window(NamedTuple):
    """Geometry of a pooling node on one input.

    ``ends`` is the node's own end padding; ``extras`` the further end padding
    that makes floor-mode pooling produce the partial windows of ``ceil_mode``.
    """

    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    begins: list[int]
    ends: list[int]
    extras: list[int]


def _ceil_extra(size: int, begin: int, end: int, kernel: int, stride: int, dilation: int) -> int:
    """End padding ``ceil_mode`` adds; the last window must start inside input or begin padding."""
    span = size + begin + end - (kernel - 1) * dilation - 1
    count = -(-span // stride) + 1
    if (count - 1) * stride >= size + begin:
        count -= 1
    return max((count - 1) * stride - span, 0)


def _pool_window(attrs: _Attrs, sizes: Sequence[int]) -> _Window:
    kernel = list(attrs.get("kernel_shape"))
    rank = len(kernel)
    strides = list(attrs.get("strides", [1] * rank))
    dilations = list(attrs.get("dilations", [1] * rank))
    begins, ends = _spatial_pads(attrs, sizes, kernel, strides, dilations)
    extras = [0] * rank
    if attrs.get("ceil_mode", 0):
        extras = [
            _ceil_extra(*axis)
            for axis in zip(sizes, begins, ends, kernel, strides, dilations, strict=True)
        ]
    return _Window(kernel, strides, dilations, begins, ends, extras)


def _max_pool(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x = inputs[0]
    window = _pool_window(attrs, x.shape[2:])
    ends = [end + extra for end, extra in zip(window.ends, window.extras, strict=True)]
    x = _pad_spatial(x, window.begins, ends, -math.inf)
    return _MAX_POOL[len(window.kernel)](x, window.kernel, window.strides, 0, window.dilations)


def _average_pool(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x = inputs[0]
    window = _pool_window(attrs, x.shape[2:])
    pool = _AVERAGE_POOL[len(window.kernel)]
    ends = [end + extra for end, extra in zip(window.ends, window.extras, strict=True)]
    means = pool(_pad_spatial(x, window.begins, ends, 0.0), window.kernel, window.strides)
    if not any(window.begins) and not any(ends):
        return means
    # Rescale from "divided by kernel size" to "divided by the positions that count".
    counted = x.new_ones((1, 1, *x.shape[2:]))
    if attrs.get("count_include_pad", 0):
        counted = _pad_spatial(counted, window.begins, window.ends, 1.0)
        counted = _pad_spatial(counted, [0] * len(ends), window.extras, 0.0)
    else:
        counted = _pad_spatial(counted, window.begins, ends, 0.0)
    return means / pool(counted, window.kernel, window.strides)


def _spatial_axes(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.dim()))


# ---------------------------------------------------------------- linear algebra and normalisation


def _gemm(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    a, b, c = _with_optional(inputs, 3)
    a = a.t() if attrs.get("transA", 0) else a
    b = b.t() if attrs.get("transB", 0) else b
    y = attrs.get("alpha", 1.0) * (a @ b)
    return y if c is None else y + attrs.get("beta", 1.0) * c


def _einsum(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    return torch.einsum(attrs.get("equation").replace(" ", ""), *inputs)


def _batch_norm(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x, scale, bias, mean, var = inputs[:5]
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=attrs.get("epsilon", 1e-5))


def _instance_norm(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x, scale, bias = inputs
    return F.instance_norm(x, weight=scale, bias=bias, eps=attrs.get("epsilon", 1e-5))


def _layer_norm(attrs: _Attrs, inputs: _Inputs) -> tuple[torch.Tensor, ...]:
    x, scale, bias = _with_optional(inputs, 3)
    axes = tuple(range(attrs.get("axis", -1) % x.dim(), x.dim()))
    stashed = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = stashed.mean(axes, keepdim=True)
    centred = stashed - mean
    inv_std = torch.rsqrt(centred.square().mean(axes, keepdim=True) + attrs.get("epsilon", 1e-5))
    y = (centred * inv_std).to(x.dtype) * scale
    return (y if bias is None else y + bias), mean, inv_std


def _softmax(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> _Op:
    """Softmax-like op; before opset 13 the input is coerced to 2-D at ``axis``."""

    def op(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
        x = inputs[0]
        if attrs.opset >= 13:
            return fn(x, attrs.get("axis", -1))
        axis = attrs.get("axis", 1) % x.dim()
        return fn(x.reshape(-1, math.prod(x.shape[axis:])), 1).reshape(x.shape)

    return op



def _stash(x: torch.Tensor, attrs: _Attrs) -> torch.Tensor:
    """``x`` in the precision normalisation statistics are computed in (``stash_type``)."""
    wanted = _TORCH_DTYPES.get(attrs.get("stash_type", onnx.TensorProto.FLOAT), x.dtype)
    return x.to(wanted) if wanted.is_floating_point else x


def _group_norm(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    """GroupNormalization; before opset 21 ``scale`` and ``bias`` hold one value per group."""
    x, scale, bias = inputs
    groups = attrs.get("num_groups")
    if attrs.opset < 21:
        per_group = x.shape[1] // groups
        scale, bias = scale.repeat_interleave(per_group), bias.repeat_interleave(per_group)
    y = F.group_norm(_stash(x, attrs), groups, eps=attrs.get("epsilon", 1e-5)).to(x.dtype)
    channels = (1, -1, *[1] * (x.dim() - 2))
    return y * scale.reshape(channels) + bias.reshape(channels)


def _rms_norm(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    """RMSNormalization (opset 23): ``x / sqrt(mean(x^2) + eps) * scale`` over axes >= axis."""
    x, scale = inputs
    axes = tuple(range(attrs.get("axis", -1) % x.dim(), x.dim()))
    stashed = _stash(x, attrs)
    inv_rms = torch.rsqrt(stashed.square().mean(axes, keepdim=True) + attrs.get("epsilon", 1e-5))
    return (stashed * inv_rms).to(x.dtype) * scale


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, heads * E) -> (B, heads, L, E)."""
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def _attention_bias(attrs: _Attrs, mask: torch.Tensor | None, past: int,
                    q: torch.Tensor, kv_length: int) -> torch.Tensor:
    """Additive bias broadcastable to (B, heads, L, S): the mask (boolean, True = attend,
    or additive) plus, with ``is_causal``, -inf above the diagonal shifted right by the
    ``past`` cached positions."""
    bias = q.new_zeros((q.shape[2], kv_length))
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros_like(mask, dtype=q.dtype).masked_fill(~mask, -math.inf)
        bias = bias + mask
    if attrs.get("is_causal", 0):
        allowed = torch.ones_like(bias, dtype=torch.bool).tril(past)
        bias = bias.masked_fill(~allowed, -math.inf)
    return bias


def _attention(attrs: _Attrs, inputs: _Inputs) -> tuple[torch.Tensor, ...]:
    """Attention (opset 23): softmax(scale * Q K^T + bias) V over heads, 3-D or 4-D inputs,
    grouped-query (K/V heads repeated), past key/value caches, softcap.

    Returns Y (shaped like Q's layout), present_key and present_value (B, kv_heads, S, E).
    """
    q, k, v, mask, past_key, past_value = _with_optional(inputs, 6)
    rank = q.dim()
    if rank == 3:
        q = _split_heads(q, attrs.get("q_num_heads"))
        k = _split_heads(k, attrs.get("kv_num_heads"))
        v = _split_heads(v, attrs.get("kv_num_heads"))
    past = 0 if past_key is None else past_key.shape[2]
    if past_key is not None:
        k, v = torch.cat([past_key, k], dim=2), torch.cat([past_value, v], dim=2)
    present_key, present_value = k, v
    bias = _attention_bias(attrs, mask, past, q, k.shape[2])
    if q.shape[1] != k.shape[1]:
        repeats = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeats, dim=1), v.repeat_interleave(repeats, dim=1)
    scale = attrs.get("scale", 1.0 / math.sqrt(q.shape[-1]))
    scores = (q @ k.transpose(-1, -2)) * scale
    softcap = attrs.get("softcap", 0.0)
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    # A query that may attend to no key at all gets zero weights, not NaN (nor NaN gradients).
    blocked = torch.isneginf(bias.amax(-1, keepdim=True))
    bias = bias.masked_fill(blocked, 0.0)
    precision = _TORCH_DTYPES.get(attrs.get("softmax_precision"), scores.dtype)
    probs = torch.softmax((scores + bias).to(precision), dim=-1).to(q.dtype)
    probs = probs.masked_fill(blocked, 0.0)
    y = probs @ v
    if rank == 3:
        y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)
    return y, present_key, present_value

# ---------------------------------------------------------------- shapes and indexing


def _reshape(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x = inputs[0]
    shape = _ints(inputs, 1)
    if not attrs.get("allowzero", 0):
        shape = [x.shape[axis] if size == 0 else size for axis, size in enumerate(shape)]
    return x.reshape(shape)


def _flatten(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x = inputs[0]
    axis = attrs.get("axis", 1)
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _transpose(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x = inputs[0]
    return x.permute(attrs.get("perm", list(reversed(range(x.dim())))))


def _squeeze(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x = inputs[0]
    axes = _attr_or_input(attrs, "axes", inputs, 1)
    return x.squeeze(tuple(axes)) if axes else x.squeeze()


def _unsqueeze(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x = inputs[0]
    axes = _attr_or_input(attrs, "axes", inputs, 1)
    rank = x.dim() + len(axes)
    for axis in sorted(axis % rank for axis in axes):
        x = x.unsqueeze(axis)
    return x


def _concat(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    return torch.cat(inputs, dim=attrs.get("axis"))


def _split(attrs: _Attrs, inputs: _Inputs) -> tuple[torch.Tensor, ...]:
    x = inputs[0]
    axis = attrs.get("axis", 0)
    sizes = _attr_or_input(attrs, "split", inputs, 1)
    if not sizes:
        chunks = attrs.get("num_outputs", attrs.n_outputs)
        return torch.split(x, -(-x.shape[axis] // chunks), dim=axis)
    return torch.split(x, sizes, dim=axis)


def _slice(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x = inputs[0]
    starts = _attr_or_input(attrs, "starts", inputs, 1)
    ends = _attr_or_input(attrs, "ends", inputs, 2)
    axes = _attr_or_input(attrs, "axes", inputs, 3) or range(len(starts))
    steps = _ints(inputs, 4) or [1] * len(starts)
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        axis %= x.dim()
        # ONNX clamps starts and ends exactly as Python slices do.
        first, stop, step = slice(start, end, step).indices(x.shape[axis])
        if step > 0:
            x = x[(slice(None),) * axis + (slice(first, stop, step),)]
        else:
            x = x.index_select(axis, torch.arange(first, stop, step, device=x.device))
    return x


def _gather(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x, indices = inputs
    axis = attrs.get("axis", 0) % x.dim()
    indices = torch.where(indices < 0, indices + x.shape[axis], indices)
    picked = x.index_select(axis, indices.reshape(-1).long())
    return picked.reshape((*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :]))


def _shape(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x = inputs[0]
    dims = x.shape[attrs.get("start", 0) : attrs.get("end")]
    return torch.tensor(dims, dtype=torch.int64, device=x.device)


def _size(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    return torch.tensor(inputs[0].numel(), dtype=torch.int64, device=inputs[0].device)


def _constant_of_shape(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    value = _to_tensor(attrs.get("value", np.zeros(1, dtype=np.float32)))
    return torch.full(_ints(inputs, 0), value.item(), dtype=value.dtype, device=inputs[0].device)


def _expand(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x = inputs[0]
    return x.expand(torch.broadcast_shapes(x.shape, tuple(_ints(inputs, 1))))


def _tile(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    return inputs[0].repeat(_ints(inputs, 1))


def _range(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    start, limit, delta = inputs
    return torch.arange(
        start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device
    )


def _reflect_index(index: torch.Tensor, size: int) -> torch.Tensor:
    period = max(2 * (size - 1), 1)
    index = index % period
    return torch.where(index < size, index, period - index)


# Pad modes other than constant: padded position -> source index along one axis.
_PAD_INDEX: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "edge": lambda index, size: index.clamp(0, size - 1),
    "reflect": _reflect_index,
    "wrap": lambda index, size: index % size,
}


def _pad(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x, _, constant, _ = _with_optional(inputs, 4)
    pads = _attr_or_input(attrs, "pads", inputs, 1)
    axes = [axis % x.dim() for axis in _ints(inputs, 3) or range(x.dim())]
    begins = dict(zip(axes, pads[: len(axes)], strict=True))
    ends = dict(zip(axes, pads[len(axes) :], strict=True))
    mode = attrs.get("mode", "constant")
    if mode == "constant":
        value = attrs.get("value", 0.0) if constant is None else constant.item()
        every = range(x.dim())
        amounts = _torch_pad([begins.get(a, 0) for a in every], [ends.get(a, 0) for a in every])
        return F.pad(x, amounts, value=value)
    for axis in axes:
        size = x.shape[axis]
        positions = torch.arange(-begins[axis], size + ends[axis], device=x.device)
        x = x.index_select(axis, _PAD_INDEX[mode](positions, size))
    return x



def _gather_elements(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x, indices = inputs
    axis = attrs.get("axis", 0) % x.dim()
    return torch.gather(x, axis, torch.where(indices < 0, indices + x.shape[axis], indices).long())


def _gather_nd(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    """GatherND: the last axis of ``indices`` (size k) indexes axes b..b+k-1 of ``x``, the
    first b = ``batch_dims`` axes being shared by ``x`` and ``indices``."""
    x, indices = inputs
    batch_dims = attrs.get("batch_dims", 0)
    depth = indices.shape[-1]
    batch = math.prod(x.shape[:batch_dims])
    flat = x.reshape(batch, *x.shape[batch_dims:])
    index = indices.reshape(batch, -1, depth).long()
    sizes = torch.tensor(flat.shape[1 : 1 + depth], device=index.device)
    index = torch.where(index < 0, index + sizes, index)
    rows = torch.arange(batch, device=index.device).reshape(batch, 1).expand(index.shape[:2])
    picked = flat[(rows, *index.unbind(-1))]
    return picked.reshape(*indices.shape[:-1], *x.shape[batch_dims + depth :])


def _trilu(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x, k = _with_optional(inputs, 2)
    diagonal = 0 if k is None else int(k.item())
    return torch.triu(x, diagonal) if attrs.get("upper", 1) else torch.tril(x, diagonal)


def _cumsum(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    """CumSum along the axis held by the second input; ``exclusive`` shifts by one,
    ``reverse`` sums from the end."""
    x, axis_tensor = inputs
    axis = int(axis_tensor.item()) % x.dim()
    reverse = attrs.get("reverse", 0)
    y = torch.cumsum(x.flip(axis) if reverse else x, axis, dtype=x.dtype)
    if attrs.get("exclusive", 0):
        y = torch.cat([torch.zeros_like(y.narrow(axis, 0, 1)),
                       y.narrow(axis, 0, y.shape[axis] - 1)], dim=axis)
    return y.flip(axis) if reverse else y

# ---------------------------------------------------------------- reductions


def _reduce(fn: Callable[[torch.Tensor, tuple[int, ...], bool], torch.Tensor]) -> _Op:
    """Reduce op; axes come from the attribute (older opsets) or the second input."""

    def op(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
        x = inputs[0]
        axes = _attr_or_input(attrs, "axes", inputs, 1)
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return fn(x, tuple(axis % x.dim() for axis in axes), bool(attrs.get("keepdims", 1)))

    return op


def _product(x: torch.Tensor, axes: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    for axis in sorted(axes, reverse=True):
        x = x.prod(dim=axis, keepdim=keepdim)
    return x


def _arg_reduce(fn: Callable[..., torch.Tensor]) -> _Op:
    """ArgMax/ArgMin; ``select_last_index`` searches the flipped axis."""

    def op(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
        x = inputs[0]
        axis = attrs.get("axis", 0) % x.dim()
        keepdim = bool(attrs.get("keepdims", 1))
        if not attrs.get("select_last_index", 0):
            return fn(x, dim=axis, keepdim=keepdim)
        return x.shape[axis] - 1 - fn(x.flip(axis), dim=axis, keepdim=keepdim)

    return op


# ---------------------------------------------------------------- resize


def _half_pixel_symmetric(x: int, scale: float, size_in: int, size_out: int) -> float:
    offset = size_in / 2 * (1 - size_out / (scale * size_in))
    return offset + (x + 0.5) / scale - 0.5


# coordinate_transformation_mode -> (output index, scale, input size, output size) -> source.
_SOURCE_COORDINATE: dict[str, Callable[[int, float, int, int], float]] = {
    "half_pixel": lambda x, scale, size_in, size_out: (x + 0.5) / scale - 0.5,
    "half_pixel_symmetric": _half_pixel_symmetric,
    "pytorch_half_pixel": lambda x, scale, size_in, size_out: (
        (x + 0.5) / scale - 0.5 if size_out > 1 else 0.0
    ),
    "align_corners": lambda x, scale, size_in, size_out: (
        x * (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    ),
    "asymmetric": lambda x, scale, size_in, size_out: x / scale,
    "tf_half_pixel_for_nn": lambda x, scale, size_in, size_out: (x + 0.5) / scale,
}

_NEAREST_ROUNDING: dict[str, Callable[[float], int]] = {
    "round_prefer_floor": lambda v: math.ceil(v - 0.5),
    "round_prefer_ceil": lambda v: math.floor(v + 0.5),
    "floor": math.floor,
    "ceil": math.ceil,
}


def _resize_nearest(
    x: torch.Tensor, axis: int, sources: list[float], rounding: str
) -> torch.Tensor:
    size = x.shape[axis]
    round_ = _NEAREST_ROUNDING[rounding]
    index = [min(max(round_(source), 0), size - 1) for source in sources]
    return x.index_select(axis, torch.tensor(index, device=x.device))


def _resize_linear(x: torch.Tensor, axis: int, sources: list[float]) -> torch.Tensor:
    size = x.shape[axis]
    clamped = [min(max(source, 0.0), size - 1.0) for source in sources]
    low = [math.floor(source) for source in clamped]
    high = [min(index + 1, size - 1) for index in low]
    weight = torch.tensor(
        [source - index for source, index in zip(clamped, low, strict=True)],
        dtype=x.dtype,
        device=x.device,
    ).reshape(-1, *[1] * (x.dim() - axis - 1))
    below = x.index_select(axis, torch.tensor(low, device=x.device))
    above = x.index_select(axis, torch.tensor(high, device=x.device))
    return below + (above - below) * weight


def _resize(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    x, _, scales, sizes = _with_optional(inputs, 4)
    axes = [axis % x.dim() for axis in attrs.get("axes", range(x.dim()))]
    if sizes is not None and sizes.numel():
        lengths = _ints(inputs, 3)
        factors = [length / x.shape[axis] for axis, length in zip(axes, lengths, strict=True)]
    else:
        factors = scales.tolist()
        lengths = [
            math.floor(x.shape[axis] * factor) for axis, factor in zip(axes, factors, strict=True)
        ]
    to_source = _SOURCE_COORDINATE[attrs.get("coordinate_transformation_mode", "half_pixel")]
    for axis, length, factor in zip(axes, lengths, factors, strict=True):
        if factor == 1 and length == x.shape[axis]:
            continue  # onnxruntime copies such axes whatever the coordinate transformation
        sources = [to_source(i, factor, x.shape[axis], length) for i in range(length)]
        if attrs.get("mode", "nearest") == "nearest":
            x = _resize_nearest(x, axis, sources, attrs.get("nearest_mode", "round_prefer_floor"))
        else:
            x = _resize_linear(x, axis, sources)
    return x



# ---------------------------------------------------------------- signal


def _stft(attrs: _Attrs, inputs: _Inputs) -> torch.Tensor:
    """STFT (opset 17): signal (B, L, 1) real or (B, L, 2) complex -> (B, frames, bins, 2),
    frames of ``frame_length`` (default the window's length) every ``frame_step`` samples,
    times the window; ``onesided`` keeps bins 0..frame_length // 2."""
    signal, step, window, length = _with_optional(inputs, 4)
    frame = int(length.item()) if length is not None else window.shape[0]
    x = signal[..., 0] if signal.shape[-1] == 1 else torch.view_as_complex(signal.contiguous())
    frames = x.unfold(1, frame, int(step.item()))
    if window is not None:
        frames = frames * window
    spectrum = torch.fft.fft(frames, dim=-1)
    if attrs.get("onesided", 1):
        spectrum = spectrum[..., : frame // 2 + 1]
    return torch.view_as_real(spectrum)

# ---------------------------------------------------------------- operator table

_OPS: dict[str, _Op] = {
    "Abs": _unary(torch.abs),
    "Add": _binary(torch.add),
    "And": _binary(torch.logical_and),
    "ArgMax": _arg_reduce(torch.argmax),
    "ArgMin": _arg_reduce(torch.argmin),
    "Attention": _attention,
    "AveragePool": _average_pool,
    "BatchNormalization": _batch_norm,
    "Cast": _cast,
    "Ceil": _unary(torch.ceil),
    "Celu": lambda attrs, inputs: F.celu(inputs[0], attrs.get("alpha", 1.0)),
    "Clip": _clip,
    "Concat": _concat,
    "ConstantOfShape": _constant_of_shape,
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Cos": _unary(torch.cos),
    "CumSum": _cumsum,
    "Div": _div,
    "Dropout": _dropout,
    "Einsum": _einsum,
    "Elu": lambda attrs, inputs: F.elu(inputs[0], attrs.get("alpha", 1.0)),
    "Equal": _binary(torch.eq),
    "Erf": _unary(torch.erf),
    "Exp": _unary(torch.exp),
    "Expand": _expand,
    "Flatten": _flatten,
    "Floor": _unary(torch.floor),
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "GatherND": _gather_nd,
    "Gelu": lambda attrs, inputs: F.gelu(inputs[0], approximate=attrs.get("approximate", "none")),
    "Gemm": _gemm,
    "GlobalAveragePool": _unary(lambda x: x.mean(_spatial_axes(x), keepdim=True)),
    "GlobalMaxPool": _unary(lambda x: x.amax(_spatial_axes(x), keepdim=True)),
    "Greater": _binary(torch.gt),
    "GreaterOrEqual": _binary(torch.ge),
    "GroupNormalization": _group_norm,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _unary(F.hardswish),
    "Identity": _unary(lambda x: x),
    "InstanceNormalization": _instance_norm,
    "IsInf": _is_inf,
    "IsNaN": _unary(torch.isnan),
    "LayerNormalization": _layer_norm,
    "LeakyRelu": lambda attrs, inputs: F.leaky_relu(inputs[0], attrs.get("alpha", 0.01)),
    "Less": _binary(torch.lt),
    "LessOrEqual": _binary(torch.le),
    "Log": _unary(torch.log),
    "LogSoftmax": _softmax(torch.log_softmax),
    "MatMul": _binary(torch.matmul),
    "Max": _variadic(torch.maximum),
    "MaxPool": _max_pool,
    "Mean": _mean,
    "Min": _variadic(torch.minimum),
    "Mish": _unary(F.mish),
    "Mod": _mod,
    "Mul": _binary(torch.mul),
    "Neg": _unary(torch.neg),
    "Not": _unary(torch.logical_not),
    "Or": _binary(torch.logical_or),
    "Pad": _pad,
    "Pow": _pow,
    "PRelu": _prelu,
    "Range": _range,
    "Reciprocal": _unary(torch.reciprocal),
    "ReduceL1": _reduce(lambda x, axes, keepdim: x.abs().sum(axes, keepdim=keepdim)),
    "ReduceL2": _reduce(lambda x, axes, keepdim: torch.linalg.vector_norm(x, 2, axes, keepdim)),
    "ReduceLogSum": _reduce(lambda x, axes, keepdim: x.sum(axes, keepdim=keepdim).log()),
    "ReduceLogSumExp": _reduce(lambda x, axes, keepdim: x.logsumexp(axes, keepdim=keepdim)),
    "ReduceMax": _reduce(lambda x, axes, keepdim: x.amax(axes, keepdim=keepdim)),
    "ReduceMean": _reduce(lambda x, axes, keepdim: x.mean(axes, keepdim=keepdim)),
    "ReduceMin": _reduce(lambda x, axes, keepdim: x.amin(axes, keepdim=keepdim)),
    "ReduceProd": _reduce(_product),
    "ReduceSum": _reduce(lambda x, axes, keepdim: x.sum(axes, keepdim=keepdim)),
    "ReduceSumSquare": _reduce(lambda x, axes, keepdim: x.square().sum(axes, keepdim=keepdim)),
    "Relu": _unary(torch.relu),
    "Reshape": _reshape,
    "Resize": _resize,
    "RMSNormalization": _rms_norm,
    "Round": _unary(torch.round),
    "Selu": _selu,
    "Shape": _shape,
    "Sigmoid": _unary(torch.sigmoid),
    "Sign": _unary(torch.sign),
    "Sin": _unary(torch.sin),
    "Size": _size,
    "Slice": _slice,
    "Softmax": _softmax(torch.softmax),
    "Softplus": _unary(F.softplus),
    "Softsign": _unary(F.softsign),
    "Split": _split,
    "Sqrt": _unary(torch.sqrt),
    "Squeeze": _squeeze,
    "STFT": _stft,
    "Sub": _binary(torch.sub),
    "Sum": _variadic(torch.add),
    "Tanh": _unary(torch.tanh),
    "Tile": _tile,
    "Transpose": _transpose,
    "Trilu": _trilu,
    "Unsqueeze": _unsqueeze,
    "Where": _where,
}

# ---------------------------------------------------------------- attribute checks


def _check_constant(attrs: _Attrs) -> str | None:
    if any(name in attrs.values for name in _CONSTANT_ATTRIBUTES):
        return None
    value = attrs.get("value")
    if value is None:
        return ", ".join(attrs.values)
    supported = value.dtype.kind in "biuf" or value.dtype.name == "bfloat16"
    return None if supported else f"value of type {value.dtype}"


def _check_resize(attrs: _Attrs) -> str | None:
    if attrs.opset < 11:
        return f"opset {attrs.opset}"
    mode = attrs.get("mode", "nearest")
    transform = attrs.get("coordinate_transformation_mode", "half_pixel")
    rounding = attrs.get("nearest_mode", "round_prefer_floor")
    policy = attrs.get("keep_aspect_ratio_policy", "stretch")
    if mode not in ("nearest", "linear"):
        return f"mode={mode}"
    if transform not in _SOURCE_COORDINATE:
        return f"coordinate_transformation_mode={transform}"
    if mode == "nearest" and rounding not in _NEAREST_ROUNDING:
        return f"nearest_mode={rounding}"
    if attrs.get("antialias", 0):
        return "antialias=1"
    if policy != "stretch":
        return f"keep_aspect_ratio_policy={policy}"
    return None


def _check_window(attrs: _Attrs) -> str | None:
    """Conv/MaxPool: onnxruntime sizes SAME padding ignoring dilations, unlike the spec."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad.startswith("SAME") and set(attrs.get("dilations", [1])) != {1}:
        return f"auto_pad={auto_pad} with dilations"
    return None


def _check_max_pool(attrs: _Attrs) -> str | None:
    return "Indices output" if attrs.n_outputs > 1 else _check_window(attrs)


def _check_batch_norm(attrs: _Attrs) -> str | None:
    training = attrs.get("training_mode", 0) or attrs.n_outputs > 1
    return "training mode" if training else None


def _check_conv_transpose(attrs: _Attrs) -> str | None:
    if "output_shape" in attrs.values:
        return "output_shape"
    auto_pad = attrs.get("auto_pad", "NOTSET")
    return None if auto_pad in ("NOTSET", "VALID") else f"auto_pad={auto_pad}"


def _check_cast(attrs: _Attrs) -> str | None:
    to = attrs.get("to")
    return None if to in _TORCH_DTYPES else f"to={onnx.TensorProto.DataType.Name(to)}"


def _check_gelu(attrs: _Attrs) -> str | None:
    approximate = attrs.get("approximate", "none")
    return None if approximate in ("none", "tanh") else f"approximate={approximate}"


def _check_pad(attrs: _Attrs) -> str | None:
    mode = attrs.get("mode", "constant")
    return None if mode == "constant" or mode in _PAD_INDEX else f"mode={mode}"


def _check_attention(attrs: _Attrs) -> str | None:
    if attrs.n_inputs > 6:
        return "nonpad_kv_seqlen"
    if attrs.n_outputs > 3:
        return "qk_matmul_output"
    windows = attrs.get("left_window_size", -1), attrs.get("right_window_size", -1)
    if windows != (-1, -1):
        return "sliding window"
    precision = attrs.get("softmax_precision")
    return f"softmax_precision={precision}" if precision not in (None, *_TORCH_DTYPES) else None


# op_type -> attrs -> description of what is not implemented, or None when all is.
_CHECKS: dict[str, Callable[[_Attrs], str | None]] = {
    "Attention": _check_attention,
    "AveragePool": lambda attrs: "dilations" if set(attrs.get("dilations", [1])) != {1} else None,
    "BatchNormalization": _check_batch_norm,
    "Cast": _check_cast,
    "Constant": _check_constant,
    "Conv": _check_window,
    "ConvTranspose": _check_conv_transpose,
    "Gelu": _check_gelu,
    "MaxPool": _check_max_pool,
    "Pad": _check_pad,
    "Resize": _check_resize,
}


# ---------------------------------------------------------------- graph


def _default_opset(model: onnx.ModelProto) -> int:
    versions = [entry.version for entry in model.opset_import if entry.domain in _DEFAULT_DOMAINS]
    return versions[0] if versions else onnx.defs.onnx_opset_version()


def _node_attrs(node: onnx.NodeProto, opset: int) -> _Attrs:
    values = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        values[attribute.name] = value
    named = [index for index, name in enumerate(node.output) if name]
    given = [index for index, name in enumerate(node.input) if name]
    return _Attrs(values, opset, named[-1] + 1 if named else 0, given[-1] + 1 if given else 0)


def _unsupported_label(node: onnx.NodeProto, opset: int) -> str | None:
    """How ``node`` appears in the unsupported list, or None when it can be run."""
    if node.domain not in _DEFAULT_DOMAINS:
        return f"{node.domain}.{node.op_type}"
    if node.op_type not in _OPS and node.op_type != "Constant":
        return node.op_type
    check = _CHECKS.get(node.op_type)
    reason = check(_node_attrs(node, opset)) if check else None
    return f"{node.op_type}({reason})" if reason else None


def _initializer_label(tensor: onnx.TensorProto) -> str | None:
    """A label for an initializer whose element type torch cannot hold (float8, int4...)."""
    if tensor.data_type in _TORCH_DTYPES:
        return None
    type_name = onnx.TensorProto.DataType.Name(tensor.data_type)
    return f"initializer {tensor.name!r} of type {type_name}"


def _constant_array(attrs: _Attrs) -> np.ndarray:
    """The tensor a (supported) Constant node produces."""
    for name, dtype in _CONSTANT_ATTRIBUTES.items():
        if name in attrs.values:
            return np.array(attrs.get(name), dtype=dtype)
    return attrs.get("value")


def _release_schedule(steps: Sequence[_Step]) -> list[list[str]]:
    """For each step, the values no later step reads; they can be freed once it ran."""
    last_use: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in (*step.inputs, *step.outputs):
            if name:
                last_use[name] = index
    schedule: list[list[str]] = [[] for _ in steps]
    for name, index in last_use.items():
        schedule[index].append(name)
    return schedule


@dataclass(frozen=True)
class _Plan:
    """What computing some values takes: the steps they depend on (graph order), the
    values each of those steps is the last reader of, and the graph inputs they read."""

    steps: list[_Step]
    release_after: list[list[str]]
    inputs: list[str]


def unsupported_operators(model: onnx.ModelProto) -> list[str]:
    """Operators of the main graph that :class:`OnnxTorchGraph` cannot run.

    Parameters
    ----------
    model : onnx.ModelProto
        The model to inspect.

    Returns
    -------
    list of str
        Sorted, unique labels: the ``op_type`` of unknown default-domain
        operators, ``domain.op_type`` for other domains, and
        ``op_type(reason)`` for attribute values not implemented, e.g.
        ``Resize(mode=cubic)``. Empty when the whole graph can be run.
    """
    opset = _default_opset(model)
    labels = [_unsupported_label(node, opset) for node in model.graph.node]
    labels += [_initializer_label(tensor) for tensor in model.graph.initializer]
    return sorted({label for label in labels if label})


class OnnxTorchGraph(torch.nn.Module):
    """An ONNX graph evaluated with differentiable torch operations.

    Initializers and Constant tensors are registered buffers, so ``.to(device)``
    moves them. Evaluating some values runs only the nodes they depend on.
    Nodes the interpreter cannot run (see :func:`unsupported_operators`) do not
    stop the rest: the values computed from them are :attr:`unavailable`, with
    the reason, as are the values :meth:`block` marks.

    Parameters
    ----------
    model : onnx.ModelProto
        The model; its main graph is interpreted.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        opset = _default_opset(model)
        self._buffer_names: dict[str, str] = {}
        blocked: dict[str, str] = {}
        for tensor in model.graph.initializer:
            label = _initializer_label(tensor)
            if label is None:
                self._register_constant(tensor.name, numpy_helper.to_array(tensor))
            else:
                blocked[tensor.name] = f"depends on {label}, which torch cannot hold"
        self._steps: list[_Step] = []
        # value -> the values computed by the nodes that read it (for reachability)
        self._consumers: dict[str, list[str]] = {}
        for index, node in enumerate(model.graph.node):
            outputs = tuple(name for name in node.output if name)
            for name in node.input:
                if name:
                    self._consumers.setdefault(name, []).extend(outputs)
            label = _unsupported_label(node, opset)
            if label is not None:
                where = node.name or f"{node.op_type}_{index}"
                reason = f"depends on ONNX node {where!r} ({label}), which has no torch version"
                blocked.update(dict.fromkeys(outputs, reason))
                continue
            attrs = _node_attrs(node, opset)
            if node.op_type == "Constant":
                self._register_constant(node.output[0], _constant_array(attrs))
            else:
                self._steps.append(_Step(
                    node.name or f"{node.op_type}_{index}", node.op_type, _OPS[node.op_type],
                    attrs, tuple(node.input), tuple(node.output)))
        self._graph_inputs = [
            value.name for value in model.graph.input if value.name not in self._buffer_names
            and value.name not in blocked
        ]
        self._producer = {
            name: index for index, step in enumerate(self._steps) for name in step.outputs if name
        }
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._unavailable: dict[str, str] = {}
        self.block(blocked)

    def _register_constant(self, name: str, array: np.ndarray) -> None:
        buffer = f"c{len(self._buffer_names)}_" + re.sub(r"\W", "_", name)
        self.register_buffer(buffer, _to_tensor(array))
        self._buffer_names[name] = buffer

    def constant(self, name: str) -> torch.Tensor | None:
        """The tensor evaluation reads for an initializer or Constant output (a buffer);
        None when there is none (not a constant, or a type torch cannot hold)."""
        buffer = self._buffer_names.get(name)
        return None if buffer is None else self.get_buffer(buffer)

    @property
    def unavailable(self) -> Mapping[str, str]:
        """Value name -> why the torch path cannot compute it (read-only)."""
        return MappingProxyType(self._unavailable)

    def block(self, reasons: Mapping[str, str]) -> None:
        """Mark each value, and every value computed from it, unavailable with its reason.

        A value keeps the first reason it was given: the one nearest the graph's
        inputs when ``reasons`` comes in graph order.
        """
        for value, reason in reasons.items():
            pending = [value]
            while pending:
                name = pending.pop()
                if name not in self._unavailable:
                    self._unavailable[name] = reason
                    pending.extend(self._consumers.get(name, ()))
        self._plans.clear()

    def _plan(self, outputs: tuple[str, ...]) -> _Plan:
        """The steps ``outputs`` depend on; raises for unknown or unavailable values."""
        plan = self._plans.get(outputs)
        if plan is not None:
            return plan
        known = {*self._producer, *self._buffer_names, *self._graph_inputs, *self._unavailable}
        unknown = [name for name in outputs if name not in known]
        if unknown:
            raise LayerSelectionError(f"no value named {', '.join(unknown)} in the ONNX graph")
        for name in outputs:
            if name in self._unavailable:
                raise GradientUnavailableError(
                    f"the torch path cannot compute {name!r}: {self._unavailable[name]}")
        needed: set[int] = set()
        inputs: set[str] = set()
        pending, seen = list(outputs), set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            index = self._producer.get(name)
            if index is None:
                if name in self._graph_inputs:
                    inputs.add(name)
                continue
            needed.add(index)
            pending.extend(value for value in self._steps[index].inputs if value)
        steps = [self._steps[index] for index in sorted(needed)]
        plan = _Plan(steps, _release_schedule(steps),
                     [name for name in self._graph_inputs if name in inputs])
        self._plans[outputs] = plan
        return plan

    def _initial(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The values evaluation starts from: constants and the given graph inputs."""
        values = {name: self.get_buffer(buffer) for name, buffer in self._buffer_names.items()}
        values.update(inputs)
        return values

    def forward(
        self, inputs: dict[str, torch.Tensor], outputs: Sequence[str]
    ) -> list[torch.Tensor]:
        """Evaluate the nodes the requested values depend on, and no others.

        Intermediate values are dropped as soon as no later node reads them.

        Parameters
        ----------
        inputs : dict of str to torch.Tensor
            Graph input name -> tensor, batch first; those the requested values
            depend on are required.
        outputs : sequence of str
            Names of the values to return: graph outputs, node outputs,
            inputs or initializers.

        Returns
        -------
        list of torch.Tensor
            The requested values, in the order requested.

        Raises
        ------
        GradientUnavailableError
            When a requested value is :attr:`unavailable`; the message says why.
        """
        wanted = tuple(outputs)
        plan = self._plan(wanted)
        missing = [name for name in plan.inputs if name not in inputs]
        if missing:
            raise InputError(f"ONNX graph inputs not supplied: {', '.join(missing)}")
        values = self._initial(inputs)
        keep = set(wanted)
        for step, released in zip(plan.steps, plan.release_after, strict=True):
            self._run(step, values)
            for name in released:
                if name not in keep:
                    values.pop(name, None)
        return [values[name] for name in wanted]

    def evaluate_locally(
        self, inputs: dict[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Each value of ``reference`` as its node computes it from the reference values.

        Every node runs on the reference values of its inputs where ``reference``
        has them (teacher forcing), so the difference between a value and its
        reference is that node's own error, not one carried over, and possibly
        amplified, from the nodes before it.

        Parameters
        ----------
        inputs : dict of str to torch.Tensor
            Graph input name -> tensor, batch first.
        reference : mapping of str to torch.Tensor
            Value name -> its value computed elsewhere (onnxruntime) on ``inputs``.
            Unavailable values are skipped.

        Returns
        -------
        computed : dict of str to torch.Tensor
            Value name -> the value as the torch path computes it, for the values of
            ``reference`` it could compute.
        failures : dict of str to str
            Value name -> why, for the graph inputs not supplied and the values of nodes
            that raised.
        """
        plan = self._plan(tuple(name for name in reference if name not in self._unavailable))
        failures = {name: f"ONNX graph input {name!r} is not supplied"
                    for name in plan.inputs if name not in inputs}
        values = self._initial(inputs)
        computed: dict[str, torch.Tensor] = {}
        for step in plan.steps:
            if any(name and name not in values for name in step.inputs):
                continue  # downstream of a failure
            try:
                self._run(step, values)
            except Exception as error:
                reason = f"the torch path fails at ONNX node {step.name!r}: {one_line(error)}"
                failures.update(dict.fromkeys((name for name in step.outputs if name), reason))
                continue
            for name in step.outputs:
                if name in reference and name in values:
                    computed[name] = values[name]
                    values[name] = reference[name].to(values[name].dtype)
        return computed, failures

    @staticmethod
    def _run(step: _Step, values: dict[str, torch.Tensor]) -> None:
        """Evaluate one step, storing its outputs in ``values``."""
        args = [values[name] if name else None for name in step.inputs]
        try:
            result = step.fn(step.attrs, args)
        except Exception as error:
            error.add_note(f"while evaluating ONNX node {step.name!r} ({step.op_type})")
            raise
        results = (result,) if isinstance(result, torch.Tensor) else result
        # Some ops also return optional outputs the node may not declare.
        for name, value in zip(step.outputs, results, strict=False):
            if name:
                values[name] = value
