"""layerlens: look inside trained neural networks.

The engine is a pure library: load a model as a probed model
(:func:`load_model`), resolve a dataset (:func:`resolve_dataset`), capture
every layer's activations in one pass per batch (:func:`capture_activations`)
and write a report folder (:func:`analyze`).

The names below are imported on first use, so that light parts of the package
(``layerlens.spec``, ``layerlens.errors``) load without torch: the HTTP API
imports them and never imports torch.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Activations": "layerlens.capture",
    "AnalyzeOptions": "layerlens.analyze",
    "Dataset": "layerlens.data",
    "InputError": "layerlens.errors",
    "LayerInfo": "layerlens.models",
    "LayerlensError": "layerlens.errors",
    "ProbedModel": "layerlens.models",
    "analyze": "layerlens.analyze",
    "capture_activations": "layerlens.capture",
    "load_model": "layerlens.models",
    "resolve_dataset": "layerlens.data",
    "select_layers": "layerlens.models",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'layerlens' has no attribute '{name}'")
    return getattr(import_module(_EXPORTS[name]), name)
