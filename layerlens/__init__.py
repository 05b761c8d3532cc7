"""layerlens: look inside trained neural networks.

The engine is a pure library: load a model as a probed model
(:func:`load_model`), resolve a dataset (:func:`resolve_dataset`), capture
every layer's activations in one pass per batch (:func:`capture_activations`)
and write a report folder (:func:`analyze`).
"""

__version__ = "0.1.0"

from layerlens.analyze import AnalyzeOptions, analyze
from layerlens.capture import Activations, capture_activations
from layerlens.data import Dataset, resolve_dataset
from layerlens.errors import InputError, LayerlensError
from layerlens.models import LayerInfo, ProbedModel, load_model, select_layers

__all__ = [
    "Activations",
    "AnalyzeOptions",
    "Dataset",
    "InputError",
    "LayerInfo",
    "LayerlensError",
    "ProbedModel",
    "__version__",
    "analyze",
    "capture_activations",
    "load_model",
    "resolve_dataset",
    "select_layers",
]
