"""Model adapters behind one interface: the probed model."""

from layerlens.models.base import InputSpec, LayerInfo, ProbedModel
from layerlens.models.loader import load_model, resolve_device
from layerlens.models.selection import select_layers

__all__ = ["InputSpec", "LayerInfo", "ProbedModel", "load_model", "resolve_device",
           "select_layers"]
