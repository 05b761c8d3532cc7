"""Model adapters behind one interface: the probed model.

Names are imported on first use so that ``layerlens.models.sniff`` loads
without torch; the ``TYPE_CHECKING`` imports give type checkers the same names.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerlens.models.base import InputSpec, LayerInfo, ProbedModel
    from layerlens.models.loader import load_model, resolve_device
    from layerlens.models.selection import select_layers

_EXPORTS = {
    "InputSpec": "layerlens.models.base",
    "LayerInfo": "layerlens.models.base",
    "ProbedModel": "layerlens.models.base",
    "load_model": "layerlens.models.loader",
    "resolve_device": "layerlens.models.loader",
    "select_layers": "layerlens.models.selection",
}

__all__ = ["InputSpec", "LayerInfo", "ProbedModel", "load_model", "resolve_device",
           "select_layers"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'layerlens.models' has no attribute '{name}'")
    return getattr(import_module(_EXPORTS[name]), name)
