"""Exceptions the engine raises on purpose.

Every error a user can cause derives from :class:`InputError`; the command
line turns it into one line on stderr and exit status 2, the service into an
HTTP 4xx problem. Anything else escaping the engine is a bug.

A message that names a job option names it by its field (``input_shape``, the
key of ``POST /v1/jobs`` and the form field of ``POST /v1/models``) and lists
it in ``options``; the command line shows it as its flag (``--input-shape``)
through :meth:`InputError.spelled`.
"""

import re
from collections.abc import Callable, Sequence


class LayerlensError(Exception):
    """Base class of all deliberate layerlens errors."""


class InputError(LayerlensError, ValueError):
    """The user's input (model, dataset, parameter) cannot be used.

    The message is one line, names the offending input, and says what would
    be accepted instead. ``options``: the job options (field names, e.g.
    ``input_shape``) the message names, written as field names.
    """

    def __init__(self, *args: object, options: Sequence[str] = ()) -> None:
        super().__init__(*args)
        self.options = tuple(options)

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with each option it names written as ``spell`` writes it (the
        command line: ``input_shape`` -> ``--input-shape``)."""
        text = str(self)
        for name in self.options:
            text = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", spell(name), text)
        return text


class ModelFormatError(InputError):
    """The model file is not a readable ONNX model or TorchScript archive."""


class DatasetError(InputError):
    """A dataset reference cannot be resolved or its file is malformed."""


class LayerSelectionError(InputError):
    """A requested layer name or pattern matches no layer of the model."""


class ShapeMismatchError(InputError):
    """The model's input shape does not fit the dataset's samples."""


class GradientUnavailableError(LayerlensError):
    """A layer cannot be differentiated (e.g. it is computed from an ONNX operator the torch
    path lacks).

    Gradient-free analyses still run; gradient-based ones report the layer
    as skipped with this message as the reason.
    """


#: How an allocation failing under a memory limit reads (torch, onnxruntime, C++).
ALLOCATION_FAILURES = ("can't allocate memory", "out of memory", "Failed to allocate memory",
                       "bad_alloc")


def is_allocation_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is memory running out, whatever library raised it."""
    return isinstance(exc, MemoryError) or any(sign in str(exc) for sign in ALLOCATION_FAILURES)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An error in one line for a report or a log: its type and the first line of its
    message, at most the last ``limit`` characters (onnxruntime puts the cause at the end)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else "…" + text[-limit:]
