"""TorchScript adapter: layers are module paths, capture is graph surgery."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from layerlens.errors import ModelFormatError, ShapeMismatchError
from layerlens.models.base import InputSpec, LayerInfo, ProbedModel, weights_by_module
from layerlens.models.inputs import (
    NO_INPUTS,
    PYTHON_INT,
    InputArrays,
    OtherInput,
    bind_inputs,
    choose_input,
    discrete_gradient_error,
    placeholder_inputs,
    probe_rows,
)
from layerlens.models.torchscript_graph import (
    capture_function,
    find_module_outputs,
    inlined_forward_graph,
)


def load_torchscript_module(data: bytes, device: str) -> torch.jit.ScriptModule:
    """Deserialise an archive already checked by :func:`check_torchscript_archive`."""
    try:
        module = torch.jit.load(io.BytesIO(data), map_location=device)
    except Exception as exc:  # torch raises RuntimeError, ValueError, pickle errors...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(f"TorchScript archive cannot be loaded: {first_line}") from exc
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    if not forward_arguments(module):
        raise ModelFormatError("TorchScript forward takes no inputs; layerlens feeds a batch "
                               "of samples")
    return module


def forward_arguments(module: torch.jit.ScriptModule) -> list[tuple[str, str]]:
    """``(name, type)`` of each argument of ``forward`` but ``self``, e.g. ``("sr", "int")``."""
    schema = module._c._get_method("forward").schema
    return [(arg.name, str(arg.type)) for arg in schema.arguments[1:]]


#: Operators that pass a tensor's values on unchanged (view, slice, reshape...), between an
#: input and the embedding lookup that shows it holds token ids.
_PASS_THROUGH = {"aten::view", "aten::reshape", "aten::slice", "aten::select", "aten::to",
                 "aten::contiguous", "aten::unsqueeze", "aten::flatten", "aten::squeeze"}


def feeds_embedding(graph: torch.Graph, index: int) -> bool:
    """Whether graph input ``index`` reaches the indices of an ``aten::embedding`` through
    operators that only pass values on: it takes integer token ids (TorchScript records
    no tensor dtypes)."""
    pending, seen = [list(graph.inputs())[index]], set()
    while pending:
        value = pending.pop()
        for use in value.uses():
            node = use.user
            if node.kind() == "aten::embedding" and use.offset == 1:
                return True
            if node.kind() in _PASS_THROUGH and use.offset == 0 and node not in seen:
                seen.add(node)
                pending.extend(node.outputs())
    return False


def _other_inputs(module: torch.jit.ScriptModule, analysed: str,
                  inputs: InputArrays) -> list[OtherInput]:
    """The forward arguments besides ``analysed``. TorchScript records no shapes or tensor
    dtypes: a tensor takes the dataset array's dtype with the batch axis first; an ``int``
    argument one Python int."""
    others = []
    for name, type_ in forward_arguments(module):
        if name == analysed:
            continue
        if type_ == "int":
            others.append(OtherInput(name, PYTHON_INT, (), None))
        elif type_ == "Tensor":
            array = inputs.per_sample.get(name, inputs.shared.get(name))
            kind = "f" if array is None else np.asarray(array).dtype.kind
            dtype = {"f": "float32", "b": "bool"}.get(kind, "int64")
            others.append(OtherInput(name, dtype, None, 0))
        else:
            raise ModelFormatError(f"TorchScript forward's argument '{name}' has type "
                                   f"{type_}; layerlens feeds tensors and ints")
    return others


class TorchScriptModel(ProbedModel):
    """A TorchScript module probed through its inlined forward graph."""

    def __init__(self, module: torch.jit.ScriptModule, *, sha256: str, input_spec: InputSpec,
                 device: str, inputs: InputArrays | None = NO_INPUTS) -> None:
        self._module = module
        names = [name for name, _ in forward_arguments(module)]
        analysed = choose_input(names, input_spec.name, "the TorchScript model")
        self._order = names
        self.other_inputs = _other_inputs(module, analysed, inputs or NO_INPUTS)
        if inputs is None:
            inputs = placeholder_inputs(self.other_inputs, input_spec.shape)
        self.shared_inputs = bind_inputs(self.other_inputs, analysed, inputs)
        self._probe_others = probe_rows(inputs, 2)
        self._graph = inlined_forward_graph(module)
        self._graph_layers = find_module_outputs(self._graph, module)
        self._functions: dict[tuple[str, ...], torch._C.ScriptFunction] = {}
        # every module output, until the probe shows which are float tensors
        self._by_name = {layer.name: layer for layer in self._graph_layers}
        shapes = self._probe_shapes(input_spec, device)
        layers = [
            LayerInfo(layer.name, layer.module_type, shapes[layer.name])
            for layer in self._graph_layers if layer.name in shapes
        ]
        self._by_name = {name: self._by_name[name] for name in shapes}
        super().__init__(format="torchscript", sha256=sha256, input_spec=input_spec,
                         layers=layers, device=device, other_inputs=self.other_inputs,
                         shared_inputs=self.shared_inputs)
        if input_spec.discrete:
            self.gradient_error = discrete_gradient_error(input_spec.name, input_spec.dtype)

    def _probe_shapes(self, spec: InputSpec, device: str) -> dict[str, tuple[int, ...]]:
        """Run two zero samples to learn each layer's per-sample output shape."""
        probe = torch.zeros((2, *spec.shape), dtype=getattr(torch, spec.dtype), device=device)
        names = [layer.name for layer in self._graph_layers]
        try:
            with torch.no_grad():
                outputs = self._run(probe, names, self._probe_others)
        except Exception as exc:
            message = str(exc).strip().splitlines()
            reason = message[-1] if message else type(exc).__name__
            raise ShapeMismatchError(
                f"the model does not run on input of shape {spec.shape}: {reason}; "
                "give the shape of one sample as input_shape (e.g. 3,32,32)",
                options=("input_shape",)
            ) from exc
        return {
            name: tuple(out.shape[1:]) for name, out in outputs.items()
            if out.is_floating_point() and out.dim() >= 1 and out.shape[0] == 2
        }

    def _run(self, x: torch.Tensor, names: Sequence[str],
             others: Mapping[str, np.ndarray] | None = None) -> dict[str, torch.Tensor]:
        key = tuple(names)
        function = self._functions.get(key)
        if function is None:
            function = capture_function(self._graph, [self._by_name[n] for n in names])
            self._functions[key] = function
        rows = self.other_rows(len(x), others)
        feeds = {spec.name: spec.layout(rows[spec.name]) for spec in self.other_inputs}
        arguments = [x if name not in feeds else feeds[name] if isinstance(feeds[name], int)
                     else torch.from_numpy(np.array(feeds[name])).to(x.device)
                     for name in self._order]
        outputs = function(self._module._c, *arguments)
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        return dict(zip(names, outputs, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The module's plain forward pass (for comparisons and benchmarks)."""
        return self._module(x)

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
        return weights_by_module(self.layers, self._module.named_parameters())
