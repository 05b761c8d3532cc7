"""``torch.export`` adapter: layers are module paths, capture runs the graph node by node.

The archive is read by :func:`~layerlens.models.pt2_archive.load_exported_program`,
which refuses anything that would run code on load. Capture walks the program's
graph once, calling each ATen operator with the weights as inputs and keeping the
requested nodes' values; it stops after the last one. The same walk under autograd gives
gradients with respect to the input.

The batch axis of the input may be dynamic (``Dim``, possibly bounded) or fixed (exported
without ``dynamic_shapes``: the example's batch size, often 1). Batches outside its range
run in chunks that fit, the last padded by repeating its final row, outputs trimmed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind
from torch.export.passes import move_to_device_pass

from layerlens.errors import ModelFormatError, ShapeMismatchError, is_allocation_failure
from layerlens.models.base import InputSpec, LayerInfo, ProbedModel, weights_by_module
from layerlens.models.exported_graph import find_module_outputs
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

_FLOAT_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.float64: "float64"}
#: Integer dtypes the analysed input may have (token ids), fed as they are.
_INTEGER_DTYPES = {torch.int64: "int64", torch.int32: "int32"}
#: A dimension: an int when fixed, else ``(lowest, highest or None, example value)``.
_Dim = int | tuple[int, int | None, int | None]


def _user_inputs(program: ExportedProgram) -> dict[str, fx.Node]:
    """The placeholders of the program's inputs, by name, in order."""
    names = [spec.arg.name for spec in program.graph_signature.input_specs
             if spec.kind == InputKind.USER_INPUT]
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    if not names:
        raise ModelFormatError("the program takes no inputs; layerlens feeds a batch of "
                               "samples")
    for name in names:
        if not isinstance(nodes[name].meta.get("val"), torch.Tensor):
            raise ModelFormatError(f"the program's input '{name}' is not a tensor; layerlens "
                                   "feeds tensors")
    return {name: nodes[name] for name in names}


def _user_input(program: ExportedProgram, input_name: str | None) -> fx.Node:
    """The placeholder of the analysed input: ``input_name``, default the first."""
    inputs = _user_inputs(program)
    node = inputs[choose_input(list(inputs), input_name, "the program")]
    value = node.meta["val"]
    if value.dtype not in _FLOAT_DTYPES and value.dtype not in _INTEGER_DTYPES:
        raise ModelFormatError(f"the program's input '{node.name}' has type {value.dtype}; "
                               "layerlens feeds float data or integer token ids")
    if value.dim() < 2:
        raise ModelFormatError(
            f"the program's input '{node.name}' has rank {value.dim()}; layerlens feeds a "
            "batch of samples with at least one feature axis (n, features...)")
    return node


def _other_inputs(program: ExportedProgram, analysed: fx.Node) -> list[OtherInput]:
    """The user inputs besides ``analysed``, each with its batch axis: the dimension that is
    the analysed input's batch dimension (the same symbol, or the same fixed size)."""
    batch = analysed.meta["val"].shape[0]
    others = []
    for name, node in _user_inputs(program).items():
        if node is analysed:
            continue
        value = node.meta["val"]
        dims = [_dim(program, size) for size in value.shape]
        axis = next((i for i, size in enumerate(value.shape)
                     if (isinstance(size, torch.SymInt) and isinstance(batch, torch.SymInt)
                         and size.node.expr == batch.node.expr)
                     or (not isinstance(size, torch.SymInt)
                         and not isinstance(batch, torch.SymInt) and size == batch)), None)
        shape = tuple(d if isinstance(d, int) else None for d in dims)
        others.append(OtherInput(name, str(value.dtype).removeprefix("torch."), shape, axis))
    return others


def _dim(program: ExportedProgram, size: int | torch.SymInt) -> _Dim:
    if not isinstance(size, torch.SymInt):
        return int(size)
    hint = size.node.hint
    bounds = program.range_constraints.get(size.node.expr)
    if bounds is None:
        return 1, None, None if hint is None else int(hint)
    low = max(int(bounds.lower), 1) if math.isfinite(float(bounds.lower)) else 1
    high = int(bounds.upper) if math.isfinite(float(bounds.upper)) else None
    return low, high, None if hint is None else int(hint)


def _fits(dim: _Dim, size: int) -> bool:
    if isinstance(dim, int):
        return dim == size
    low, high, _ = dim
    return size >= low and (high is None or size <= high)


def _shown(dims: Sequence[_Dim]) -> tuple[int | str, ...]:
    return tuple(d if isinstance(d, int) else "?" for d in dims)


def exported_input(program: ExportedProgram, input_shape: tuple[int, ...] | None,
                   sample_shapes: Sequence[tuple[int, ...]], input_name: str | None = None
                   ) -> tuple[str, tuple[int, ...], str]:
    """(name, shape of one sample, dtype) of the program's analysed input (``input_name``,
    default the first).

    The graph's shape where static, else ``input_shape``, else the first dataset sample
    shape within the exported ranges, else the example the program was exported with.
    """
    node = _user_input(program, input_name)
    value = node.meta["val"]
    declared = [_dim(program, size) for size in value.shape[1:]]
    dtype = {**_FLOAT_DTYPES, **_INTEGER_DTYPES}[value.dtype]

    def fits(shape: tuple[int, ...]) -> bool:
        return len(shape) == len(declared) and all(
            _fits(d, s) for d, s in zip(declared, shape, strict=True))

    if input_shape is not None:
        if not fits(input_shape):
            raise ShapeMismatchError(
                f"input_shape {input_shape} contradicts the program's input shape "
                f"{_shown(declared)}", options=("input_shape",))
        return node.name, input_shape, dtype
    if all(isinstance(d, int) for d in declared):
        return node.name, tuple(int(d) for d in declared if isinstance(d, int)), dtype
    for shape in sample_shapes:
        if fits(shape):
            return node.name, shape, dtype
    example = tuple(d if isinstance(d, int) else d[2] for d in declared)
    if any(d is None for d in example):
        raise ShapeMismatchError(
            f"the program's input shape {_shown(declared)} has dynamic dimensions and no "
            "dataset sample shape fits it; give input_shape", options=("input_shape",))
    return node.name, tuple(int(d) for d in example if d is not None), dtype


def _last_uses(graph: fx.Graph) -> dict[fx.Node, list[fx.Node]]:
    """``node -> values no node after it uses`` (freed as the walk goes)."""
    last: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        for used in node.all_input_nodes:
            last[used] = node
    freed: dict[fx.Node, list[fx.Node]] = {}
    for value, user in last.items():
        freed.setdefault(user, []).append(value)
    return freed


def _mutates(node: fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    return schema is not None and any(
        arg.alias_info is not None and arg.alias_info.is_write for arg in schema.arguments)


def _training_node(node: fx.Node) -> bool:
    """Whether ``node`` runs in training mode (batch statistics, dropout)."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return False
    for index, arg in enumerate(schema.arguments):
        if arg.name in ("training", "train"):
            value = node.args[index] if index < len(node.args) else node.kwargs.get(arg.name)
            return value is True
    return False


class ExportedModel(ProbedModel):
    """A ``torch.export`` program, run node by node on its own graph."""

    def __init__(self, program: ExportedProgram, *, sha256: str, input_spec: InputSpec,
                 device: str, inputs: InputArrays | None = NO_INPUTS) -> None:
        if device != "cpu":
            program = move_to_device_pass(program, device)
        self._graph = program.graph
        self._check_inference(program)
        self._inputs = self._placeholder_values(program)
        self._parameters = {spec.target: getattr(spec.arg, "name", "")
                            for spec in program.graph_signature.input_specs
                            if spec.kind == InputKind.PARAMETER and spec.target is not None}
        self._freed = _last_uses(self._graph)
        # a value an in-place operator changes later is kept as it was when computed
        self._copy = any(_mutates(node) for node in self._graph.nodes)
        analysed = _user_input(program, input_spec.name)
        self._input_name = analysed.name
        self.other_inputs = _other_inputs(program, analysed)
        if inputs is None:
            inputs = placeholder_inputs(self.other_inputs, input_spec.shape)
        self.shared_inputs = bind_inputs(self.other_inputs, analysed.name, inputs)
        batch = _dim(program, analysed.meta["val"].shape[0])
        self._batch = (batch, batch) if isinstance(batch, int) else (batch[0], batch[1])
        self._graph_layers = find_module_outputs(self._graph)
        self._node_of = {layer.name: layer.node for layer in self._graph_layers}
        shapes = self._probe_shapes(input_spec, device, inputs)
        layers = [LayerInfo(layer.name, layer.module_type, shapes[layer.name])
                  for layer in self._graph_layers if layer.name in shapes]
        self._node_of = {layer.name: self._node_of[layer.name] for layer in layers}
        super().__init__(format="pt2", sha256=sha256, input_spec=input_spec, layers=layers,
                         device=device, other_inputs=self.other_inputs,
                         shared_inputs=self.shared_inputs)
        if input_spec.discrete:
            self.gradient_error = discrete_gradient_error(input_spec.name, input_spec.dtype)

    @staticmethod
    def _check_inference(program: ExportedProgram) -> None:
        for node in program.graph.nodes:
            if node.op == "call_function" and _training_node(node):
                stack = list((node.meta.get("nn_module_stack") or {}).values())
                where = f" in module {stack[-1][0]!r}" if stack and stack[-1][0] else ""
                raise ModelFormatError(
                    f"the program was exported in training mode ({node.target}{where} uses "
                    "batch statistics or dropout); call model.eval() before torch.export.export")

    @staticmethod
    def _placeholder_values(program: ExportedProgram) -> dict[str, torch.Tensor | None]:
        """Each placeholder's tensor by name (weights, buffers, constants); ``None`` for
        the user inputs."""
        values: dict[str, torch.Tensor | None] = {}
        for spec in program.graph_signature.input_specs:
            name = getattr(spec.arg, "name", "")
            if spec.kind == InputKind.USER_INPUT:
                values[name] = None
            elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER) \
                    and spec.target in program.state_dict:
                values[name] = program.state_dict[spec.target].detach()
            elif spec.target in program.constants \
                    and isinstance(program.constants[spec.target], torch.Tensor):
                values[name] = program.constants[spec.target].detach()
            else:
                raise ModelFormatError(f"the program's input {name!r} has no value in the "
                                       "archive")
        return values

    def _probe_shapes(self, spec: InputSpec, device: str,
                      inputs: InputArrays) -> dict[str, tuple[int, ...]]:
        """Run a small random batch (small token ids for an integer input) to learn each
        layer's per-sample output shape."""
        low, high = self._batch
        n = min(max(2, low), high) if high is not None else max(2, low)
        rng = np.random.default_rng(0)
        probe = (rng.integers(0, 2, (n, *spec.shape)) if spec.discrete
                 else rng.standard_normal((n, *spec.shape))).astype(spec.dtype)
        names = [layer.name for layer in self._graph_layers]
        others = {k: v for k, v in probe_rows(inputs, n).items()
                  if k in {o.name for o in self.other_inputs}}
        try:
            with torch.no_grad():
                outputs = self._run(torch.from_numpy(probe).to(device), names, others)
        except Exception as exc:
            if is_allocation_failure(exc):
                raise MemoryError(f"the program ran out of memory: {exc}") from exc
            message = str(exc).strip().splitlines()
            reason = message[0] if message else type(exc).__name__
            raise ShapeMismatchError(
                f"the program does not run on input of shape {spec.shape}: {reason}; "
                "give the shape of one sample as input_shape", options=("input_shape",)
            ) from exc
        return {name: tuple(out.shape[1:]) for name, out in outputs.items()
                if out.is_floating_point() and out.dim() >= 1 and out.shape[0] == n}

    def _walk(self, feeds: Mapping[str, torch.Tensor], names: Sequence[str]
              ) -> dict[str, torch.Tensor]:
        """One pass over the graph for one batch that fits the batch range; ``feeds``: every
        user input by name."""
        wanted = {self._node_of[name]: name for name in names}
        env: dict[fx.Node, Any] = {}
        found: dict[str, torch.Tensor] = {}
        for node in self._graph.nodes:
            if not wanted.keys() - found.keys():
                break
            if node.op == "placeholder":
                value = self._inputs[node.name]
                env[node] = feeds[node.name] if value is None else value
            elif node.op == "call_function":
                args, kwargs = fx.node.map_arg((node.args, node.kwargs), env.__getitem__)
                env[node] = node.target(*args, **kwargs)
            else:  # output: every wanted node comes before it
                break
            if node.name in wanted:
                found[node.name] = env[node].clone() if self._copy else env[node]
            for value_node in self._freed.get(node, ()):
                env.pop(value_node, None)
        return {wanted[node]: value for node, value in found.items()}

    def _run(self, x: torch.Tensor, names: Sequence[str],
             others: Mapping[str, np.ndarray] | None = None) -> dict[str, torch.Tensor]:
        rows = self.other_rows(len(x), others)

        def feeds(index: np.ndarray | slice) -> dict[str, torch.Tensor]:
            chunk = {self._input_name: x[torch.as_tensor(index)] if isinstance(index, np.ndarray)
                     else x}
            for spec in self.other_inputs:
                value = spec.layout(rows[spec.name][index])
                chunk[spec.name] = torch.from_numpy(np.array(value)).to(x.device)
            return chunk

        chunks = self._chunks(len(x))
        if chunks is None:
            return self._walk(feeds(slice(None)), names)
        parts = [self._walk(feeds(index), names) for index in chunks]
        return {name: torch.cat([part[name] for part in parts])[:len(x)] for name in names}

    def _chunks(self, n: int) -> list[np.ndarray] | None:
        """None when a batch of ``n`` is in the batch range; else the row indices of chunks
        of the largest size allowed, the last padded by repeating its final row up to the
        smallest size allowed (callers trim outputs to n)."""
        low, high = self._batch
        if n >= low and (high is None or n <= high):
            return None
        size = high if high is not None and n > high else low
        chunks = [np.arange(i, min(i + size, n)) for i in range(0, n, size)]
        if len(chunks[-1]) < low:
            chunks[-1] = np.concatenate([chunks[-1],
                                         np.full(low - len(chunks[-1]), n - 1)])
        return chunks

    def capture(self, x: np.ndarray, layers: Sequence[str],
                others: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        tensor = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        with torch.no_grad():
            outputs = self._run(tensor, layers, others)
        return {name: out.float().cpu().numpy() for name, out in outputs.items()}

    def _capture_torch(self, x: torch.Tensor, layers: Sequence[str],
                       others: Mapping[str, np.ndarray] | None = None
                       ) -> dict[str, torch.Tensor]:
        return self._run(x, layers, others)

    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        tensors = {target: self._inputs[name] for target, name in self._parameters.items()}
        return weights_by_module(self.layers, ((target, tensor) for target, tensor
                                               in tensors.items() if tensor is not None))
