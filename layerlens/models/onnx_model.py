"""ONNX adapter: onnxruntime for fast capture, a torch interpreter for gradients.

Layers are values that depend on the model input and are float tensors with a batch
axis (constants, shape arithmetic and non-tensor outputs such as skl2onnx's ZipMap are
not layers): module outputs named by module path where the file records it, otherwise
node outputs named by node name (:mod:`layerlens.models.onnx_names`). Capture adds the
wanted values as extra graph outputs of an onnxruntime session, so all of them come out
of ONE forward pass. At load, both paths run on a small batch: a layer where the torch
path (gradients) disagrees with onnxruntime (capture), and every layer computed from it,
lose their gradients, as do those computed from operators without a torch version.

A model exported with a fixed batch size (``[1, 3, 224, 224]`` is common; torch's
default exporter fixes the example's) is probed with exactly that many samples and runs
in chunks of that size on both paths; the last chunk is padded and trimmed. An If with a
constant condition is replaced by its branch; values inside other control flow are not
layers (:mod:`layerlens.models.onnx_control_flow`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from layerlens.errors import (
    ModelFormatError,
    ShapeMismatchError,
    is_allocation_failure,
    one_line,
)
from layerlens.models.base import InputSpec, LayerInfo, ProbedModel
from layerlens.models.inputs import (
    NO_INPUTS,
    InputArrays,
    OtherInput,
    bind_inputs,
    choose_input,
    discrete_gradient_error,
    placeholder_inputs,
    probe_rows,
)
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
#: Integer inputs the analysed input may have (token ids), fed as they are.
_INTEGER_TYPES = {onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32"}
_Batch = TypeVar("_Batch", np.ndarray, torch.Tensor)
#: Samples the load check runs when the batch axis is free.
_PROBE_SAMPLES = 2
#: Disagreement between the torch path and onnxruntime tolerated at load: this fraction of
#: the layer's largest |value|, plus AGREEMENT_FLOOR times the network's typical one (see
#: ``OnnxModel._check_agreement``); at least 8 machine epsilons each for 16-bit layers.
AGREEMENT_TOLERANCE = 1e-3
AGREEMENT_FLOOR = 1e-5
#: Nodes whose second input, when an initializer, is a trainable weight (the third: a bias).
_WEIGHTED_NODES = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@dataclass(frozen=True)
class _Graph:
    """What the top-level nodes read, which depend on the input, and the values they give
    that may be layers (input-dependent, not known to be non-tensors), in graph order."""

    reads: list[set[str]]
    dependent: set[int]
    values: list[str]


def onnx_input(model: onnx.ModelProto, input_name: str | None = None
               ) -> tuple[str, str, tuple[int | None, ...]]:
    """(name, dtype, per-sample shape with None for symbolic dims) of the analysed input:
    ``input_name``, default the first."""
    name, dtype, shape, _ = _input_signature(model, input_name)
    return name, dtype, shape


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _input_signature(model: onnx.ModelProto, input_name: str | None
                     ) -> tuple[str, str, tuple[int | None, ...], int | None]:
    """:func:`onnx_input` and the fixed batch size (None when the batch axis is free)."""
    inputs = {value.name: value for value in _graph_inputs(model)}
    if not inputs:
        raise ModelFormatError("the ONNX model has no inputs")
    value = inputs[choose_input(list(inputs), input_name, "the ONNX model")]
    elem_type = value.type.tensor_type.elem_type
    dtypes: dict[int, str] = {int(k): v for k, v in [*_FLOAT_TYPES.items(),
                                                     *_INTEGER_TYPES.items()]}
    if elem_type not in dtypes:
        type_name = onnx.TensorProto.DataType.Name(elem_type)
        raise ModelFormatError(
            f"ONNX input '{value.name}' has type {type_name}; layerlens feeds float data or "
            "integer token ids (int64, int32)")
    dims = value.type.tensor_type.shape.dim
    if len(dims) < 2:
        raise ModelFormatError(
            f"ONNX input '{value.name}' has rank {len(dims)}; layerlens feeds a batch of "
            "samples with at least one feature axis (n, features...)")
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])
    batch = dims[0].dim_value if dims[0].HasField("dim_value") and dims[0].dim_value > 0 \
        else None
    return value.name, dtypes[elem_type], shape, batch


def _other_inputs(model: onnx.ModelProto, analysed: str) -> list[OtherInput]:
    """The graph inputs besides ``analysed``, each with its batch axis: the dimension named
    like the analysed input's batch dimension, else (a batch axis without a name) the first
    free one, else (a fixed batch b) the first of size b; none for a scalar."""
    inputs = {value.name: value for value in _graph_inputs(model)}
    batch = inputs[analysed].type.tensor_type.shape.dim[0]
    others = []
    for name, value in inputs.items():
        if name == analysed:
            continue
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise ModelFormatError(f"the ONNX model's input '{name}' is not a tensor; "
                                   "layerlens feeds tensors")
        dims = list(tensor.shape.dim)
        free = [not d.HasField("dim_value") or d.dim_value <= 0 for d in dims]
        axis = None
        if batch.dim_param:
            axis = next((i for i, d in enumerate(dims) if d.dim_param == batch.dim_param), None)
        elif not batch.HasField("dim_value") or batch.dim_value <= 0:
            axis = next((i for i, d in enumerate(dims) if free[i] and not d.dim_param), None)
        elif batch.dim_value > 0:
            axis = next((i for i, d in enumerate(dims) if d.dim_value == batch.dim_value), None)
        shape = tuple(None if f else int(d.dim_value) for d, f in zip(dims, free, strict=True))
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        others.append(OtherInput(name, dtype, shape, axis))
    return others


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


def _largest(values: np.ndarray) -> float:
    """max |finite entry|, 0 when there is none."""
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size else 0.0


def _disagreement(value: torch.Tensor, reference: np.ndarray, scale: float) -> str | None:
    """How the torch path's ``value`` of a layer differs from onnxruntime's ``reference``
    beyond the tolerance, or None when they agree: ``|value - reference| <= t * max
    |reference| + f * scale`` on every finite entry (``t``, ``f``: AGREEMENT_TOLERANCE and
    AGREEMENT_FLOOR, at least 8 epsilons of the dtype; ``scale``: the network's typical
    max |value|); the non-finite entries must be the same."""
    if not value.is_floating_point():
        return f"the torch path gives {value.dtype}"
    got = value.double().cpu().numpy()
    if got.shape != reference.shape:
        return f"shape {got.shape} instead of {reference.shape}"
    finite = np.isfinite(reference)
    if not np.array_equal(got[~finite], reference[~finite], equal_nan=True):
        return "different non-finite entries"
    eps = 8 * torch.finfo(value.dtype).eps
    allowed = (max(AGREEMENT_TOLERANCE, eps) * _largest(reference)
               + max(AGREEMENT_FLOOR, eps) * scale)
    difference = _largest(got[finite] - reference[finite])
    if difference <= allowed:
        return None
    return f"max |difference| {difference:.2g}, allowed {allowed:.2g}"


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
                 device: str, inputs: InputArrays | None = NO_INPUTS) -> None:
        model = inline_constant_ifs(model)
        self._model = model
        self._input_name, _, _, self._fixed_batch = _input_signature(model, input_spec.name)
        others = _other_inputs(model, self._input_name)
        if inputs is None:
            inputs = placeholder_inputs(others, input_spec.shape)
        shared = bind_inputs(others, self._input_name, inputs)
        self._providers = _providers(device)
        self._sessions: dict[tuple[str, ...], ort.InferenceSession] = {}
        graph = _graph(model, self._input_name)
        samples = self._fixed_batch or _PROBE_SAMPLES
        rng = np.random.default_rng(0)
        probe = (rng.integers(0, 2, (samples, *input_spec.shape)) if input_spec.discrete
                 else rng.standard_normal((samples, *input_spec.shape)))
        probe = probe.astype(input_spec.dtype)
        probe_others = {name: rows for name, rows in probe_rows(inputs, samples).items()
                        if name in {other.name for other in others}}
        self.other_inputs, self.shared_inputs = others, shared  # _run reads them
        probed = self._probe(probe, graph.values, input_spec, probe_others)
        named = _layers(model, graph, [value for value in graph.values if value in probed])
        layers = [LayerInfo(n.name, n.op, probed[n.value].shape[1:]) for n in named]
        self._values = {n.name: n.value for n in named}
        probed = {n.name: probed[n.value] for n in named}
        super().__init__(format="onnx", sha256=sha256, input_spec=input_spec, layers=layers,
                         device=device, other_inputs=others, shared_inputs=shared)
        self._torch_graph: OnnxTorchGraph | None = None
        if input_spec.discrete:
            self.gradient_error = discrete_gradient_error(input_spec.name, input_spec.dtype)
            return
        try:  # gradients are optional: never refuse a model that onnxruntime runs
            self._torch_graph = OnnxTorchGraph(model).to(device)
            self._check_agreement(probe, {name: probed[name] for name in self.layer_names},
                                  probe_others)
        except Exception as exc:
            self._torch_graph = None
            self.gradient_error = f"the torch path of this ONNX model fails: {one_line(exc)}"

    def _probe(self, x: np.ndarray, values: Sequence[str], spec: InputSpec,
               others: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run onnxruntime once on ``x``; keep the float ``values`` with a batch axis."""
        if not values:
            raise ModelFormatError("the ONNX model has no layers: no node output depends on "
                                   "the input")
        try:
            outputs = self._run(x, values, others)
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

    def _check_agreement(self, x: np.ndarray, expected: dict[str, np.ndarray],
                         others: Mapping[str, np.ndarray]) -> None:
        """Compare the torch path with onnxruntime on every layer; gradients stop where
        they differ. Fills ``layer_gradient_errors`` (and ``gradient_error`` when no layer
        is left with gradients).

        Each layer's torch value is computed from onnxruntime's values of the layers
        before it (:meth:`OnnxTorchGraph.evaluate_locally`), so what is compared is that
        layer's own error: rounding differences upstream, which a cancellation or a steep
        function (exp, a sigmoid's tail) can amplify far beyond their size, do not count
        against it. A layer agrees when, on every entry,
        ``|torch - ort| <= AGREEMENT_TOLERANCE * max|layer| + AGREEMENT_FLOOR * scale``,
        ``scale`` being the median over layers of their max |value|. The first term
        because the rounding of sums (convolutions, products, softmax) grows with the
        layer's magnitude, not each entry's, so an entry-wise relative test fails near
        zero; the second because onnxruntime's exp, sigmoid, tanh and erf are
        approximations accurate to ~1e-7 of their output's range, not of each value, so a
        sigmoid whose values are all ~1e-7 (a detector's empty background) differs by
        percents of its own magnitude and by nothing at the network's. Non-finite entries
        must be the same. A layer that disagrees, or whose node raises in torch, and
        every layer computed from it lose their gradients, with the reason; capture
        keeps onnxruntime's values, so nothing else changes.
        """
        graph = self._torch_graph
        assert graph is not None
        feeds = {name: torch.from_numpy(np.array(value)).to(self.device)
                 for name, value in self._feeds(x, others).items()}
        reference = {self._values[name]: torch.from_numpy(value).to(self.device)
                     for name, value in expected.items()}
        with torch.no_grad():
            computed, failures = graph.evaluate_locally(feeds, reference)
        graph.block(failures)
        scale = float(np.median([_largest(value) for value in expected.values()]))
        for name, want in expected.items():
            value = self._values[name]
            if value in graph.unavailable:
                continue
            got = computed.get(value)
            problem = "it is not computed" if got is None else _disagreement(got, want, scale)
            if problem is not None:
                graph.block({value: f"the torch path disagrees with onnxruntime at layer "
                                    f"'{name}' ({problem})"})
        self.layer_gradient_errors = {name: graph.unavailable[value]
                                      for name, value in self._values.items()
                                      if value in graph.unavailable}
        if self.layers and len(self.layer_gradient_errors) == len(self.layers):
            first = self.layers[0].name
            self.gradient_error = (f"no layer has gradients (layer '{first}': "
                                   f"{self.layer_gradient_errors[first]})")

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

    def capture(self, x: np.ndarray, layers: Sequence[str],
                others: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        by_value = self._run(x, [self._values[name] for name in layers], others)
        return {name: by_value[self._values[name]] for name in layers}

    def _feeds(self, x: _Batch, others: Mapping[str, np.ndarray] | None
               ) -> dict[str, _Batch | np.ndarray]:
        """The analysed input ``x`` (n, ...) with every other input for its n samples, each
        in the model's layout (:meth:`OtherInput.layout`)."""
        rows = self.other_rows(len(x), others)
        feeds: dict[str, _Batch | np.ndarray] = {self._input_name: x}
        for spec in self.other_inputs:
            feeds[spec.name] = np.asarray(spec.layout(rows[spec.name]))
        return feeds

    def _run(self, x: np.ndarray, wanted: Sequence[str],
             others: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """onnxruntime's values ``wanted`` for the batch ``x``, by value name."""
        values = tuple(dict.fromkeys(wanted))
        session = self._session(values)
        rows = self.other_rows(len(x), others)
        chunks = [session.run(list(values), self._feeds(chunk, {k: v[index]
                                                               for k, v in rows.items()}))
                  for chunk, index in self._chunks(x, np.concatenate)]
        outputs = [self._join([_as_float32(p) for p in parts], np.concatenate, len(x))
                   for parts in zip(*chunks, strict=True)]
        return dict(zip(values, outputs, strict=True))

    def _capture_torch(self, x: torch.Tensor, layers: Sequence[str],
                       others: Mapping[str, np.ndarray] | None = None
                       ) -> dict[str, torch.Tensor]:
        assert self._torch_graph is not None
        wanted = [self._values[n] for n in layers]
        rows = self.other_rows(len(x), others)
        chunks = []
        for chunk, index in self._chunks(x, torch.cat):
            feeds = self._feeds(chunk, {k: v[index] for k, v in rows.items()})
            chunks.append(self._torch_graph(
                {k: v if isinstance(v, torch.Tensor)
                 else torch.from_numpy(np.array(v)).to(x.device) for k, v in feeds.items()},
                wanted))
        outputs = [self._join(parts, torch.cat, len(x)) for parts in zip(*chunks, strict=True)]
        return dict(zip(layers, outputs, strict=True))

    def _chunks(self, x: _Batch, concatenate: Callable[[list[_Batch]], _Batch]
                ) -> list[tuple[_Batch, np.ndarray]]:
        """``x`` (n, ...) as one batch, or, for a fixed batch size b, as chunks of b rows,
        the last padded by repeating its final row (callers trim outputs to n); each with
        the row indices it holds (to take the other inputs' rows alike)."""
        size = self._fixed_batch
        if size is None or len(x) == size:
            return [(x, np.arange(len(x)))]
        chunks: list[tuple[_Batch, np.ndarray]] = []
        for start in range(0, len(x), size):
            index = np.minimum(np.arange(start, start + size), len(x) - 1)
            chunk = x[start:start + size]
            if len(chunk) < size:
                chunk = concatenate([chunk] + [chunk[-1:]] * (size - len(chunk)))
            chunks.append((chunk, index))
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

    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        initializers = {tensor.name: tensor for tensor in self._model.graph.initializer}
        found: dict[str, dict[str, torch.Tensor]] = {}
        for node in self._model.graph.node:
            if node.op_type not in _WEIGHTED_NODES or len(node.input) < 2 \
                    or node.input[1] not in initializers:
                continue
            layer = self._layer_from(node.output[0])
            for name in node.input[1:3]:
                tensor = self._initializer_tensor(initializers.get(name))
                if layer is not None and tensor is not None:
                    found.setdefault(layer, {})[name] = tensor
        return {name: found[name] for name in self.layer_names if name in found}

    def _layer_from(self, value: str) -> str | None:
        """The first layer (forward order) that is ``value`` or is computed from it
        through values that are not layers."""
        layer_of = {v: name for name, v in self._values.items()}
        readers: dict[str, list[str]] = {}
        for node in self._model.graph.node:
            for name in node.input:
                readers.setdefault(name, []).extend(out for out in node.output if out)
        order = {name: i for i, name in enumerate(self.layer_names)}
        reached, pending, seen = [], [value], {value}
        while pending:
            current = pending.pop()
            if current in layer_of:
                reached.append(layer_of[current])
                continue
            for nxt in readers.get(current, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    pending.append(nxt)
        return min(reached, key=order.__getitem__) if reached else None

    def _initializer_tensor(self, initializer: onnx.TensorProto | None) -> torch.Tensor | None:
        """The tensor the torch path reads for ``initializer``; without a torch path, a
        copy on the model's device (nothing can differentiate through it)."""
        if initializer is None:
            return None
        if self._torch_graph is not None:
            return self._torch_graph.constant(initializer.name)
        array = numpy_helper.to_array(initializer)
        if array.dtype.kind != "f":
            return None
        return torch.from_numpy(array.copy()).to(self.device)
