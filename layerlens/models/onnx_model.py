"""ONNX adapter: onnxruntime for fast capture, a torch interpreter for gradients.

Layers are node outputs that are float tensors and depend on the model input
(constants and shape arithmetic are not layers), named by node name. Capture
adds the wanted values as extra graph outputs of an onnxruntime session, so
all of them come out of ONE forward pass. At load, both paths run on a small
batch and must agree on every layer.

A model exported with a fixed batch size (``[1, 3, 224, 224]`` is common) runs
in chunks of that size on both paths; the last chunk is padded and trimmed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import onnx
import onnxruntime as ort
import torch

from layerlens.errors import (
    GradientUnavailableError,
    ModelFormatError,
    ModelMismatchError,
    ShapeMismatchError,
    is_allocation_failure,
)
from layerlens.models.base import InputSpec, LayerInfo, ProbedModel
from layerlens.models.onnx_torch import OnnxTorchGraph

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
}
_Batch = TypeVar("_Batch", np.ndarray, torch.Tensor)
#: Operators whose outputs after the first are masks, not activations.
_MASK_OUTPUTS = {"Dropout"}
#: Largest relative disagreement (max |ort - torch| / max |ort|) tolerated at load.
AGREEMENT_RTOL = 1e-3


@dataclass(frozen=True)
class _Candidate:
    name: str
    op: str
    value: str


def onnx_input(model: onnx.ModelProto) -> tuple[str, str, tuple[int | None, ...]]:
    """(name, dtype, per-sample shape with None for symbolic dims) of the single input."""
    name, dtype, shape, _ = _input_signature(model)
    return name, dtype, shape


def _input_signature(model: onnx.ModelProto) -> tuple[str, str, tuple[int | None, ...],
                                                       int | None]:
    """:func:`onnx_input` and the fixed batch size (None when the batch axis is free)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise ModelFormatError(
            f"ONNX model has {len(inputs)} inputs ({', '.join(v.name for v in inputs)}); "
            "layerlens feeds exactly one tensor"
        )
    value = inputs[0]
    elem_type = value.type.tensor_type.elem_type
    if elem_type not in _FLOAT_TYPES:
        type_name = onnx.TensorProto.DataType.Name(elem_type)
        raise ModelFormatError(
            f"ONNX input '{value.name}' has type {type_name}; layerlens feeds float data"
        )
    dims = value.type.tensor_type.shape.dim
    if len(dims) < 2:
        raise ModelFormatError(
            f"ONNX input '{value.name}' has rank {len(dims)}; layerlens feeds a batch of "
            "samples with at least one feature axis (n, features...)")
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])
    batch = dims[0].dim_value if dims[0].HasField("dim_value") and dims[0].dim_value > 0 \
        else None
    return value.name, _FLOAT_TYPES[elem_type], shape, batch


def _layer_candidates(model: onnx.ModelProto, input_name: str) -> list[_Candidate]:
    """Node outputs that depend on the input, in graph (topological) order."""
    dependent = {input_name}
    candidates: list[_Candidate] = []
    used_names: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not any(name in dependent for name in node.input):
            continue
        outputs = [name for name in node.output if name]
        dependent.update(outputs)
        if node.op_type in _MASK_OUTPUTS:  # a mask (float before opset 12), not an activation
            outputs = outputs[:1]
        base = node.name or f"{node.op_type}_{index}"
        for k, value in enumerate(outputs):
            name = base if len(outputs) == 1 else f"{base}:{k}"
            while name in used_names:
                name += "_"
            used_names.add(name)
            candidates.append(_Candidate(name, node.op_type, value))
    return candidates


def _with_outputs(model: onnx.ModelProto, values: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are exactly ``values``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.output[:]
    copy.graph.output.extend(onnx.helper.make_empty_tensor_value_info(v) for v in values)
    return copy


def _relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    """max |value - reference| / max |reference| over finite entries; inf if shapes or
    the positions of non-finite entries differ."""
    if value.shape != reference.shape:
        return float("inf")
    finite = np.isfinite(reference)
    if not np.array_equal(finite, np.isfinite(value)):
        return float("inf")
    if not finite.any():
        return 0.0
    scale = max(float(np.abs(reference[finite]).max()), 1e-6)
    return float(np.abs(value[finite] - reference[finite]).max()) / scale


def _as_float32(array: np.ndarray) -> np.ndarray:
    """Float outputs as float32 (the capture contract); other dtypes untouched."""
    array = np.asarray(array)
    return array.astype(np.float32, copy=False) if array.dtype.kind == "f" else array


def _providers(device: str) -> list[str]:
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxModel(ProbedModel):
    """An ONNX model: onnxruntime captures, :class:`OnnxTorchGraph` differentiates."""

    def __init__(self, model: onnx.ModelProto, *, sha256: str, input_spec: InputSpec,
                 device: str) -> None:
        self._model = model
        self._input_name, _, _, self._fixed_batch = _input_signature(model)
        self._providers = _providers(device)
        self._sessions: dict[tuple[str, ...], ort.InferenceSession] = {}
        candidates = _layer_candidates(model, self._input_name)
        probe = np.random.default_rng(0).standard_normal((2, *input_spec.shape))
        probe = probe.astype(input_spec.dtype)
        self._values = {c.name: c.value for c in candidates}
        probed = self._probe(probe, candidates, input_spec)
        layers = [
            LayerInfo(c.name, c.op, probed[c.name].shape[1:]) for c in candidates
            if c.name in probed
        ]
        self._values = {layer.name: self._values[layer.name] for layer in layers}
        super().__init__(format="onnx", sha256=sha256, input_spec=input_spec, layers=layers,
                         device=device)
        self._torch_graph: OnnxTorchGraph | None = None
        try:
            self._torch_graph = OnnxTorchGraph(model).to(device)
        except GradientUnavailableError as exc:
            self.gradient_error = str(exc)
        if self._torch_graph is not None:
            self._check_agreement(probe, {name: probed[name] for name in self.layer_names})

    def _probe(self, x: np.ndarray, candidates: Sequence[_Candidate],
               spec: InputSpec) -> dict[str, np.ndarray]:
        """Run onnxruntime once on ``x``; keep float outputs with a batch axis."""
        try:
            outputs = self.capture(x, [c.name for c in candidates])
        except Exception as exc:
            if is_allocation_failure(exc):
                raise MemoryError(f"onnxruntime ran out of memory: {exc}") from exc
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ShapeMismatchError(
                f"the ONNX model does not run on input of shape {spec.shape}: {reason}"
            ) from exc
        return {
            name: out for name, out in outputs.items()
            if out.dtype.kind == "f" and out.ndim >= 1 and out.shape[0] == len(x)
        }

    def _check_agreement(self, x: np.ndarray, expected: dict[str, np.ndarray]) -> None:
        """Both execution paths must give the same activations (relative max error)."""
        assert self._torch_graph is not None
        try:
            with torch.no_grad():
                got = self._capture_torch(torch.from_numpy(x).to(self.device), list(expected))
        except Exception as exc:  # an operator variant the interpreter lacks
            self.gradient_error = f"the torch path of this ONNX model failed: {exc}"
            self._torch_graph = None
            return
        for name, reference in expected.items():
            error = _relative_error(got[name].float().cpu().numpy(), reference)
            if not error <= AGREEMENT_RTOL:
                raise ModelMismatchError(
                    f"onnxruntime and the torch path disagree on layer '{name}' "
                    f"(relative error {error:.2g} > {AGREEMENT_RTOL}); please report this model"
                )

    def _session(self, values: tuple[str, ...]) -> ort.InferenceSession:
        session = self._sessions.get(values)
        if session is None:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            session = ort.InferenceSession(
                _with_outputs(self._model, values).SerializeToString(), options,
                providers=self._providers,
            )
            self._sessions[values] = session
        return session

    def plain_session(self) -> ort.InferenceSession:
        """A session with the model's own outputs only (for comparisons and benchmarks)."""
        return self._session(tuple(out.name for out in self._model.graph.output))

    def capture(self, x: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        values = tuple(dict.fromkeys(self._values[name] for name in layers))
        session = self._session(values)
        chunks = [session.run(list(values), {self._input_name: chunk})
                  for chunk in self._chunks(x, np.concatenate)]
        outputs = [self._join([_as_float32(p) for p in parts], np.concatenate, len(x))
                   for parts in zip(*chunks, strict=True)]
        by_value = dict(zip(values, outputs, strict=True))
        return {name: by_value[self._values[name]] for name in layers}

    def _capture_torch(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        assert self._torch_graph is not None
        wanted = [self._values[n] for n in layers]
        chunks = [self._torch_graph({self._input_name: chunk}, wanted)
                  for chunk in self._chunks(x, torch.cat)]
        outputs = [self._join(parts, torch.cat, len(x)) for parts in zip(*chunks, strict=True)]
        return dict(zip(layers, outputs, strict=True))

    def _chunks(self, x: _Batch, concatenate: Callable[[list[_Batch]], _Batch]
                ) -> list[_Batch]:
        """``x`` (n, ...) as one batch, or, for a fixed batch size b, as chunks of b rows,
        the last padded by repeating its final row (callers trim outputs to n)."""
        size = self._fixed_batch
        if size is None or len(x) == size:
            return [x]
        chunks: list[_Batch] = [x[i:i + size] for i in range(0, len(x), size)]
        last: list[_Batch] = [chunks[-1]]
        last.extend([chunks[-1][-1:]] * (size - len(chunks[-1])))
        chunks[-1] = concatenate(last)
        return chunks

    def _join(self, parts: Sequence[_Batch], concatenate: Callable[[list[_Batch]], _Batch],
              n: int) -> _Batch:
        """One value's outputs of the chunks, as one batch of ``n`` rows; a value without
        the batch axis (shape arithmetic) is the first chunk's."""
        if self._fixed_batch is None or n == self._fixed_batch:
            return parts[0]
        if all(p.ndim >= 1 and p.shape[0] == self._fixed_batch for p in parts):
            return concatenate(list(parts))[:n]
        return parts[0]
