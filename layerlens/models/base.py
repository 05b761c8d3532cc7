"""The probed-model interface every analysis is written against.

A *probed model* lists its layers in forward execution order and returns any
set of layers' activations from ONE forward pass. Analyses never branch on
the file format: ONNX, TorchScript and ``torch.export`` (``.pt2``) are three
adapters behind this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from layerlens.errors import GradientUnavailableError, InputError
from layerlens.models.inputs import OtherInput, check_integral, missing_input

#: Layers with trainable weights (see :meth:`ProbedModel.weights`): convolutions and matrix
#: products, by ONNX operator or torch module type.
WEIGHTED_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul",
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "Linear",
})


@dataclass(frozen=True)
class LayerInfo:
    """One capturable layer.

    Attributes
    ----------
    name : str
        TorchScript and ``.pt2``: module path (``features.3``); ONNX: node name
        (``/features/3/Conv``).
    op : str
        Module type (``Conv2d``) or ONNX operator (``Conv``).
    shape : tuple of int
        Output shape of ONE sample (batch dimension removed).
    """

    name: str
    op: str
    shape: tuple[int, ...]

    @property
    def n_features(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass(frozen=True)
class InputSpec:
    """What the model takes for one sample.

    ``mean``/``std`` (one value per channel, channel = axis 0 of ``shape``)
    are applied as ``(x - mean) / std`` before the model sees the data, so
    datasets stay in their natural units. An integer input (token ids) is fed as it is.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    name: str = "input"

    def __post_init__(self) -> None:
        if self.discrete and (self.mean is not None or self.std is not None):
            raise InputError(f"mean and std normalise a float input; the model's input "
                             f"'{self.name}' takes {self.dtype} (token ids are fed as they "
                             "are): leave them out", options=("mean", "std"))

    @property
    def discrete(self) -> bool:
        """Whether the input takes integers (token ids): no gradients with respect to it."""
        return np.dtype(self.dtype).kind in "iub"

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        """Reshape a batch ``(n, *anything)`` to ``(n, *shape)`` and normalise."""
        x = np.asarray(x)
        out = check_integral(x, self.dtype, f"input '{self.name}'").reshape(
            (len(x), *self.shape))
        if self.mean is None and self.std is None:
            return out
        bshape = (1, -1) + (1,) * (len(self.shape) - 1)
        mean = np.asarray(self.mean if self.mean is not None else 0.0, dtype=self.dtype)
        std = np.asarray(self.std if self.std is not None else 1.0, dtype=self.dtype)
        return (out - mean.reshape(bshape)) / std.reshape(bshape)


@dataclass
class ProbedModel(ABC):
    """A loaded model with layer-level access.

    Subclasses fill ``layers`` (forward execution order) and implement the
    two capture methods. The analysed input is ``input_spec.name``; the model's
    ``other_inputs`` come from the dataset's other arrays: ``shared_inputs`` holds those
    with one value for every sample, the per-sample ones are passed to each capture as
    ``others``. Gradients with respect to the input may be missing
    for the whole model (``gradient_error``) or for some layers only
    (``layer_gradient_errors``, e.g. those computed from an ONNX operator that
    has no torch version): :meth:`gradient_error_for` tells for one layer.
    """

    format: Literal["onnx", "torchscript", "pt2"]
    sha256: str
    input_spec: InputSpec
    layers: list[LayerInfo]
    device: str = "cpu"
    gradient_error: str | None = field(default=None)
    layer_gradient_errors: dict[str, str] = field(default_factory=dict)
    other_inputs: list[OtherInput] = field(default_factory=list)
    shared_inputs: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def other_rows(self, n: int, others: Mapping[str, np.ndarray] | None
                   ) -> dict[str, np.ndarray]:
        """Every other input for a batch of ``n`` samples, as ``(n, *one sample's value)``:
        from ``others`` (per-sample rows), else the shared value repeated.

        Raises InputError naming an input that neither supplies.
        """
        given = dict(others or {})
        rows = {}
        for spec in self.other_inputs:
            if spec.name in given:
                rows[spec.name] = np.asarray(given[spec.name])
            elif spec.name in self.shared_inputs:
                value = self.shared_inputs[spec.name]
                rows[spec.name] = np.broadcast_to(value, (n, *value.shape))
            else:
                raise missing_input(spec, self.input_spec.name,
                                    [*given, *self.shared_inputs])
        return rows

    @abstractmethod
    def capture(self, x: np.ndarray, layers: Sequence[str],
                others: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Activations of ``layers`` for a preprocessed batch, in one forward pass.

        Parameters
        ----------
        x : ndarray, shape (n, *input_spec.shape)
            Already preprocessed (see :meth:`InputSpec.preprocess`).
        layers : sequence of str
            Layer names from :attr:`layers`.
        others : dict, optional
            The per-sample other inputs of these ``n`` samples, ``name -> (n, ...)``
            (:meth:`other_rows`); shared ones come from :attr:`shared_inputs`.

        Returns
        -------
        dict
            ``name -> ndarray (n, *layer.shape)``, float32, on the host.
        """

    @abstractmethod
    def _capture_torch(self, x: torch.Tensor, layers: Sequence[str],
                       others: Mapping[str, np.ndarray] | None = None
                       ) -> dict[str, torch.Tensor]:
        """Differentiable capture; only called for layers that have gradients."""

    def capture_torch(self, x: torch.Tensor, layers: Sequence[str],
                      others: Mapping[str, np.ndarray] | None = None
                      ) -> dict[str, torch.Tensor]:
        """Like :meth:`capture` on torch tensors, differentiable w.r.t. ``x``.

        Raises
        ------
        GradientUnavailableError
            When a requested layer has no gradients; the message names it and says why.
        """
        for name in layers:
            reason = self.gradient_error_for(name)
            if reason is not None:
                raise GradientUnavailableError(f"layer '{name}' has no gradients: {reason}")
        return self._capture_torch(x, layers, others)

    def gradient_error_for(self, layer: str) -> str | None:
        """Why ``layer`` has no gradients with respect to the input; None when it has."""
        return self.layer_gradient_errors.get(layer, self.gradient_error)

    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """The trainable weights of each weighted layer, in forward order.

        Returns ``layer name -> {weight name: tensor}`` for the layers that are
        convolutions or matrix products (:data:`WEIGHTED_OPS`; ONNX: the initializers
        feeding a Conv/ConvTranspose/Gemm/MatMul node, weight and bias, credited to the
        first layer at or after the node's output). The tensors are the ones the
        differentiable forward pass reads: leaves with ``requires_grad`` off, to be turned
        on only while taking gradients with respect to them. Empty when the format does
        not expose its weights.
        """
        return {}

    @property
    def differentiable(self) -> bool:
        """Whether any layer has gradients with respect to the input."""
        return self.gradient_error is None


def weights_by_module(layers: Sequence[LayerInfo],
                      parameters: Iterable[tuple[str, torch.Tensor]],
                      ) -> dict[str, dict[str, torch.Tensor]]:
    """:meth:`ProbedModel.weights` of a model whose layers are module paths: each weighted
    layer's own parameters (``features.0.weight`` belongs to layer ``features.0``). A
    module's second call (``name#2``) shares the first's weights and is not listed again."""
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in parameters:
        by_module.setdefault(name.rpartition(".")[0], {})[name] = tensor
    return {layer.name: by_module[layer.name] for layer in layers
            if layer.op in WEIGHTED_OPS and layer.name in by_module}
