"""layerlens: look inside trained neural networks.

The engine is a pure library: load a model as a probed model
(:func:`load_model`), resolve a dataset (:func:`resolve_dataset`), capture
every layer's activations in one pass per batch (:func:`capture_activations`)
and write a report folder (:func:`analyze`, options in :class:`JobOptions`).

The names below are imported on first use, so that light parts of the package
(``layerlens.spec``, ``layerlens.options``, ``layerlens.analyses.registry``)
load without torch: the HTTP API imports them and never imports torch. The
``TYPE_CHECKING`` imports give type checkers the same names.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from layerlens.analyze import analyze
    from layerlens.capture import Activations, capture_activations
    from layerlens.data import Dataset, resolve_dataset
    from layerlens.errors import InputError, LayerlensError
    from layerlens.models import LayerInfo, ProbedModel, load_model, select_layers
    from layerlens.options import JobOptions

_EXPORTS = {
    "Activations": "layerlens.capture",
    "Dataset": "layerlens.data",
    "InputError": "layerlens.errors",
    "JobOptions": "layerlens.options",
    "LayerInfo": "layerlens.models",
    "LayerlensError": "layerlens.errors",
    "ProbedModel": "layerlens.models",
    "analyze": "layerlens.analyze",
    "capture_activations": "layerlens.capture",
    "load_model": "layerlens.models",
    "resolve_dataset": "layerlens.data",
    "select_layers": "layerlens.models",
}

__all__ = ["Activations", "Dataset", "InputError", "JobOptions", "LayerInfo", "LayerlensError",
           "ProbedModel", "__version__", "analyze", "capture_activations", "load_model",
           "resolve_dataset", "select_layers"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'layerlens' has no attribute '{name}'")
    return getattr(import_module(_EXPORTS[name]), name)
