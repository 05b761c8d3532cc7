"""ONNX adapter: onnxruntime for fast capture, a torch interpreter for gradients.

Layers are values that depend on the model input and are float tensors with a batch
axis (constants, shape arithmetic and non-tensor outputs such as skl2onnx's ZipMap are
not layers): module outputs named by module path where the file records it, otherwise
node outputs named by node name (:mod:`layerlens.models.onnx_names`). Capture adds the
wanted values as extra graph outputs of an onnxruntime session, so all of them come out
of ONE forward pass. At load, both paths run on a small batch and must agree on every
layer.

A model exported with a fixed batch size (``[1, 3, 224, 224]`` is common; torch's
default exporter fixes the example's) is probed with exactly that many samples and runs
in chunks of that size on both paths; the last chunk is padded and trimmed. An If with a
constant condition is replaced by its branch; values inside other control flow are not
layers (:mod:`layerlens.models.onnx_control_flow`).
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
from layerlens.models.onnx_control_flow import (
    CONTROL_FLOW,
    inline_constant_ifs,
    node_reads,
    subgraphs,
)
from layerlens.models.onnx_names import MASK_OUTPUTS, NamedValue, module_layers, node_layers
from layerlens.models.onnx_torch import OnnxTorchGraph

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
}
_Batch = TypeVar("_Batch", np.ndarray, torch.Tensor)
#: Samples the load check runs when the batch axis is free.
_PROBE_SAMPLES = 2
#: Largest relative disagreement (max |ort - torch| / max |ort|) tolerated at load.
AGREEMENT_RTOL = 1e-3


@dataclass(frozen=True)
class _Graph:
    """What the top-level nodes read, which depend on the input, and the values they give
    that may be layers (input-dependent, not known to be non-tensors), in graph order."""

    reads: list[set[str]]
    dependent: set[int]
    values: list[str]


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


def _value_types(model: onnx.ModelProto) -> dict[str, str]:
    """``value -> "tensor_type" | "sequence_type" | ...`` where declared or inferred."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # shape inference is a best effort here
        inferred = model.graph
    infos = [*model.graph.input, *model.graph.output, *model.graph.value_info,
             *inferred.value_info]
    return {info.name: str(info.type.WhichOneof("value")) for info in infos
            if info.type.WhichOneof("value")}


def _graph(model: onnx.ModelProto, input_name: str) -> _Graph:
    """Input dependence (through subgraphs too) and the candidate values of ``model``."""
    types = _value_types(model)
    dependent_values = {input_name}
    reads: list[set[str]] = []
    dependent: set[int] = set()
    values: list[str] = []
    for index, node in enumerate(model.graph.node):
        reads.append(node_reads(node))
        if not reads[-1] & dependent_values:
            continue
        dependent.add(index)
        outputs = [name for name in node.output if name]
        dependent_values.update(outputs)
        if node.op_type in MASK_OUTPUTS:  # a mask (float before opset 12), not an activation
            outputs = outputs[:1]
        values += [name for name in outputs if types.get(name, "tensor_type") == "tensor_type"]
    return _Graph(reads, dependent, values)


def _layers(model: onnx.ModelProto, graph: _Graph, capturable: list[str]) -> list[NamedValue]:
    """Module outputs by module path where the file records it, else node outputs by node
    name; refuses a model without layers, or whose layers all sit inside control flow."""
    named = module_layers(model, graph.reads, graph.dependent, capturable) or \
        node_layers(model, capturable)
    producer = {value: node for node in model.graph.node for value in node.output}
    flow = [node for index, node in enumerate(model.graph.node)
            if index in graph.dependent and node.op_type in CONTROL_FLOW
            and any(sub.node for sub in subgraphs(node))]
    if flow and all(producer[layer.value].op_type in CONTROL_FLOW for layer in named):
        node = flow[0]
        raise ModelFormatError(
            f"the ONNX model's layers sit inside control flow ({node.op_type} node "
            f"'{node.name or node.output[0]}', whose branches or body depend on the input), "
            "where onnxruntime cannot return them; layerlens captures values outside control "
            "flow, and If nodes with a constant condition")
    if not named:
        raise ModelFormatError(
            "the ONNX model has no layers: no node output is a float tensor computed from "
            "the input with the batch axis first")
    return named


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
        model = inline_constant_ifs(model)
        self._model = model
        self._input_name, _, _, self._fixed_batch = _input_signature(model)
        self._providers = _providers(device)
        self._sessions: dict[tuple[str, ...], ort.InferenceSession] = {}
        graph = _graph(model, self._input_name)
        samples = self._fixed_batch or _PROBE_SAMPLES
        probe = np.random.default_rng(0).standard_normal((samples, *input_spec.shape))
        probe = probe.astype(input_spec.dtype)
        probed = self._probe(probe, graph.values, input_spec)
        named = _layers(model, graph, [value for value in graph.values if value in probed])
        layers = [LayerInfo(n.name, n.op, probed[n.value].shape[1:]) for n in named]
        self._values = {n.name: n.value for n in named}
        probed = {n.name: probed[n.value] for n in named}
        super().__init__(format="onnx", sha256=sha256, input_spec=input_spec, layers=layers,
                         device=device)
        self._torch_graph: OnnxTorchGraph | None = None
        try:
            self._torch_graph = OnnxTorchGraph(model).to(device)
        except GradientUnavailableError as exc:
            self.gradient_error = str(exc)
        if self._torch_graph is not None:
            self._check_agreement(probe, {name: probed[name] for name in self.layer_names})

    def _probe(self, x: np.ndarray, values: Sequence[str],
               spec: InputSpec) -> dict[str, np.ndarray]:
        """Run onnxruntime once on ``x``; keep the float ``values`` with a batch axis."""
        if not values:
            raise ModelFormatError("the ONNX model has no layers: no node output depends on "
                                   "the input")
        try:
            outputs = self._run(x, values)
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
        by_value = self._run(x, [self._values[name] for name in layers])
        return {name: by_value[self._values[name]] for name in layers}

    def _run(self, x: np.ndarray, wanted: Sequence[str]) -> dict[str, np.ndarray]:
        """onnxruntime's values ``wanted`` for the batch ``x``, by value name."""
        values = tuple(dict.fromkeys(wanted))
        session = self._session(values)
        chunks = [session.run(list(values), {self._input_name: chunk})
                  for chunk in self._chunks(x, np.concatenate)]
        outputs = [self._join([_as_float32(p) for p in parts], np.concatenate, len(x))
                   for parts in zip(*chunks, strict=True)]
        return dict(zip(values, outputs, strict=True))

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
