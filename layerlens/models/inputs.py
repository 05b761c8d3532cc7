"""The model inputs besides the analysed one, fed from the dataset's other arrays.

A dataset ``.npz`` may hold, besides ``x`` and ``y``, arrays named after the model's
other inputs (an attention mask, an RNN state, a sample rate): per sample (first axis N)
or one value for every sample. :class:`InputArrays` carries them; the model's
:class:`OtherInput` of each puts a batch of rows into the layout the model declares, its
batch axis where the declared shape has it (silero-vad's ``state`` is ``(2, batch, 128)``)
or none at all (a scalar sample rate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from layerlens.errors import InputError

#: dtype of a TorchScript argument typed ``int`` (a Python int, not a tensor).
PYTHON_INT = "int"


@dataclass(frozen=True)
class InputArrays:
    """A dataset's arrays for the model's other inputs, by input name.

    ``per_sample`` arrays have shape (n_samples, *one sample's value); each ``shared`` array
    is one value for every sample (no batch axis).
    """

    per_sample: Mapping[str, np.ndarray] = field(default_factory=dict)
    shared: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [*self.per_sample, *self.shared]

    def rows(self, index: np.ndarray | slice) -> InputArrays:
        """The same inputs for the rows ``index`` of the dataset."""
        return InputArrays({k: v[index] for k, v in self.per_sample.items()}, self.shared)

    def batch(self, n: int, index: np.ndarray | slice | None = None) -> dict[str, np.ndarray]:
        """Every input for ``n`` samples as ``(n, *one sample's value)``: the per-sample rows
        ``index`` (default all), the shared values repeated (a view, no copy)."""
        out = {k: v if index is None else v[index] for k, v in self.per_sample.items()}
        out.update({k: np.broadcast_to(v, (n, *v.shape)) for k, v in self.shared.items()})
        return out


NO_INPUTS = InputArrays()


@dataclass(frozen=True)
class OtherInput:
    """One model input besides the analysed one, as the file declares it.

    Attributes
    ----------
    name : the input's name.
    dtype : numpy dtype name, or :data:`PYTHON_INT` for a TorchScript ``int`` argument.
    shape : declared shape including the batch axis (None for a free dimension); None as a
        whole when the file does not record it (TorchScript).
    batch_axis : where the batch axis is in ``shape``; None when the input has none (one
        value for the whole batch, e.g. a scalar sample rate).
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None
    batch_axis: int | None

    @property
    def discrete(self) -> bool:
        return self.dtype == PYTHON_INT or np.dtype(self.dtype).kind in "iub"

    def describe(self) -> str:
        """``'state' (shape (2, batch, 128), float32)``."""
        if self.shape is None:
            shown = "any shape, batch first" if self.dtype != PYTHON_INT else "a Python int"
        else:
            dims = ["batch" if i == self.batch_axis else "?" if d is None else str(d)
                    for i, d in enumerate(self.shape)]
            shown = f"shape ({', '.join(dims)}{',' if len(dims) == 1 else ''})"
        return f"'{self.name}' ({shown}, {self.dtype})"

    def sample_shape(self) -> str:
        """One sample's value, as the dataset array holds it (no batch axis)."""
        if self.shape is None:
            return "(its shape without the batch axis)"
        dims = ["?" if d is None else str(d) for i, d in enumerate(self.shape)
                if i != self.batch_axis]
        return f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"

    def layout(self, rows: np.ndarray) -> np.ndarray | int:
        """``rows`` (n, *one sample's value) in the model's layout and dtype.

        Raises InputError when the rows do not fit the declared shape, or vary over the
        samples for an input without a batch axis.
        """
        if self.batch_axis is None or self.dtype == PYTHON_INT:
            if len(rows) > 1 and not (rows == rows[:1]).all():
                raise InputError(f"the model's input {self.describe()} takes one value for "
                                 "every sample, and the dataset's array varies over samples")
            value = rows[0]
            if self.dtype == PYTHON_INT:
                if value.size != 1 or value.dtype.kind not in "iu":
                    raise InputError(f"the model's input {self.describe()} takes one integer; "
                                     f"the dataset's array holds {value.dtype} of shape "
                                     f"{value.shape}")
                return int(value.reshape(-1)[0])
            return self._cast(value, value.shape)
        return self._cast(np.moveaxis(rows, 0, self.batch_axis),
                          rows.shape[1:], batched=True)

    def _cast(self, value: np.ndarray, sample: tuple[int, ...], *,
              batched: bool = False) -> np.ndarray:
        if self.shape is not None:
            fits = value.ndim == len(self.shape) and all(
                d is None or d == s or (batched and i == self.batch_axis)
                for i, (d, s) in enumerate(zip(self.shape, value.shape, strict=True)))
            if not fits:
                raise InputError(
                    f"the model's input {self.describe()} takes values of shape "
                    f"{self.sample_shape()} per sample; the dataset's array "
                    f"'{self.name}' gives {tuple(sample)}")
        return check_integral(value, self.dtype, f"input '{self.name}'")


def check_integral(values: np.ndarray, dtype: str, what: str) -> np.ndarray:
    """``values`` as ``dtype``; for an integer dtype, refuses values that are not whole
    numbers (a float cast would truncate token ids silently)."""
    target = np.dtype(dtype)
    if target.kind in "iu" and values.dtype.kind == "f" and not np.array_equal(
            values, np.round(values)):
        raise InputError(f"the model's {what} takes integers ({target}); the dataset's "
                         "values are not whole numbers")
    return np.ascontiguousarray(values, dtype=target)


def missing_input(spec: OtherInput, analysed: str, given: Sequence[str]) -> InputError:
    """The error for an input the dataset does not supply: what the model expects and how
    to supply it."""
    have = ", ".join(f"'{name}'" for name in given) or "none"
    return InputError(
        f"the model takes input {spec.describe()} besides '{analysed}', which the dataset's "
        f"x feeds: add an array '{spec.name}' to the dataset .npz, per sample (first axis "
        f"N) or one value {spec.sample_shape()} for every sample (other arrays found: {have})",
        options=("input_name",))


def placeholder_inputs(specs: Sequence[OtherInput], sample_shape: Sequence[int]
                       ) -> InputArrays:
    """Zeros for every one of ``specs``, shared, where no dataset is at hand (an upload's
    inspection lists the layers before any job names a dataset): the declared shape without
    the batch axis, free dimensions 1; a TorchScript tensor (no declared shape) the analysed
    input's ``sample_shape``."""
    shared = {}
    for spec in specs:
        if spec.shape is None:
            shape: tuple[int, ...] = tuple(sample_shape)
        else:
            shape = tuple(1 if d is None else d for i, d in enumerate(spec.shape)
                          if i != spec.batch_axis)
        dtype = "int64" if spec.dtype == PYTHON_INT else spec.dtype
        shared[spec.name] = np.zeros(shape, dtype=dtype)
    return InputArrays({}, shared)


def bind_inputs(specs: Sequence[OtherInput], analysed: str,
                arrays: InputArrays) -> dict[str, np.ndarray]:
    """Check that ``arrays`` supply every one of ``specs``; the shared values among them."""
    for spec in specs:
        if spec.name not in arrays.per_sample and spec.name not in arrays.shared:
            raise missing_input(spec, analysed, arrays.names)
    return {spec.name: np.asarray(arrays.shared[spec.name]) for spec in specs
            if spec.name in arrays.shared}


def choose_input(names: Sequence[str], input_name: str | None, where: str) -> str:
    """The analysed input: ``input_name``, default the first of ``names``."""
    if input_name is None:
        return names[0]
    if input_name not in names:
        raise InputError(f"input_name '{input_name}' is not an input of {where} (its inputs: "
                         f"{', '.join(names)})", options=("input_name",))
    return input_name


def discrete_gradient_error(name: str, dtype: str) -> str:
    """Why a model whose analysed input takes integers has no input gradients."""
    return (f"the model's input '{name}' is discrete ({dtype}, e.g. token ids): there are "
            "no gradients with respect to it")


def probe_rows(arrays: InputArrays, n: int) -> dict[str, np.ndarray]:
    """Every other input for a load probe of ``n`` samples: the first per-sample rows
    (repeated when the dataset has fewer), the shared values repeated."""
    first = {k: v[np.arange(n) % len(v)] for k, v in arrays.per_sample.items() if len(v)}
    return {**InputArrays(first, arrays.shared).batch(n)}
