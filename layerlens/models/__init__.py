"""Model adapters behind one interface: the probed model.

Names are imported on first use so that ``layerlens.models.sniff`` loads
without torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "InputSpec": "layerlens.models.base",
    "LayerInfo": "layerlens.models.base",
    "ProbedModel": "layerlens.models.base",
    "load_model": "layerlens.models.loader",
    "resolve_device": "layerlens.models.loader",
    "select_layers": "layerlens.models.selection",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'layerlens.models' has no attribute '{name}'")
    return getattr(import_module(_EXPORTS[name]), name)
