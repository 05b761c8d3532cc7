"""The probed-model interface every analysis is written against.

A *probed model* lists its layers in forward execution order and returns any
set of layers' activations from ONE forward pass. Analyses never branch on
the file format: ONNX, TorchScript and ``torch.export`` (``.pt2``) are three
adapters behind this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from layerlens.errors import GradientUnavailableError


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
    datasets stay in their natural units.
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        """Reshape a batch ``(n, *anything)`` to ``(n, *shape)`` and normalise."""
        out = np.ascontiguousarray(x, dtype=self.dtype).reshape((len(x), *self.shape))
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
    two capture methods. Gradients with respect to the input may be missing
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

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @abstractmethod
    def capture(self, x: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        """Activations of ``layers`` for a preprocessed batch, in one forward pass.

        Parameters
        ----------
        x : ndarray, shape (n, *input_spec.shape)
            Already preprocessed (see :meth:`InputSpec.preprocess`).
        layers : sequence of str
            Layer names from :attr:`layers`.

        Returns
        -------
        dict
            ``name -> ndarray (n, *layer.shape)``, float32, on the host.
        """

    @abstractmethod
    def _capture_torch(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Differentiable capture; only called for layers that have gradients."""

    def capture_torch(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
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
        return self._capture_torch(x, layers)

    def gradient_error_for(self, layer: str) -> str | None:
        """Why ``layer`` has no gradients with respect to the input; None when it has."""
        return self.layer_gradient_errors.get(layer, self.gradient_error)

    @property
    def differentiable(self) -> bool:
        """Whether any layer has gradients with respect to the input."""
        return self.gradient_error is None
