"""TorchScript adapter: layers are module paths, capture is graph surgery."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch

from layerlens.errors import ModelFormatError, ShapeMismatchError
from layerlens.models.base import InputSpec, LayerInfo, ProbedModel, weights_by_module
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
    n_inputs = len(list(module.forward.graph.inputs())) - 1
    if n_inputs != 1:
        raise ModelFormatError(
            f"TorchScript forward takes {n_inputs} inputs; layerlens feeds exactly one tensor"
        )
    return module


class TorchScriptModel(ProbedModel):
    """A TorchScript module probed through its inlined forward graph."""

    def __init__(self, module: torch.jit.ScriptModule, *, sha256: str, input_spec: InputSpec,
                 device: str) -> None:
        self._module = module
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
                         layers=layers, device=device)

    def _probe_shapes(self, spec: InputSpec, device: str) -> dict[str, tuple[int, ...]]:
        """Run two zero samples to learn each layer's per-sample output shape."""
        probe = torch.zeros((2, *spec.shape), dtype=getattr(torch, spec.dtype), device=device)
        names = [layer.name for layer in self._graph_layers]
        try:
            with torch.no_grad():
                outputs = self._run(probe, names)
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

    def _run(self, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        key = tuple(names)
        function = self._functions.get(key)
        if function is None:
            function = capture_function(self._graph, [self._by_name[n] for n in names])
            self._functions[key] = function
        outputs = function(self._module._c, x)
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        return dict(zip(names, outputs, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The module's plain forward pass (for comparisons and benchmarks)."""
        return self._module(x)

    def capture(self, x: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        tensor = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        with torch.no_grad():
            outputs = self._run(tensor, layers)
        return {name: out.float().cpu().numpy() for name, out in outputs.items()}

    def _capture_torch(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        return self._run(x, layers)

    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return weights_by_module(self.layers, self._module.named_parameters())
