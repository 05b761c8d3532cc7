"""Dataset references resolved to in-memory arrays."""

from layerlens.data.dataset import Dataset
from layerlens.data.resolve import BUILTIN_NAMES, resolve_dataset

__all__ = ["BUILTIN_NAMES", "Dataset", "resolve_dataset"]
