"""``load_model``: one entry point from a file on disk to a probed model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from layerlens.errors import InputError, ModelFormatError, ShapeMismatchError
from layerlens.models.base import InputSpec, ProbedModel
from layerlens.models.exported_model import ExportedModel, exported_input
from layerlens.models.inputs import NO_INPUTS, InputArrays, choose_input
from layerlens.models.onnx_files import MAX_MODEL_BYTES, read_onnx
from layerlens.models.onnx_model import OnnxModel, onnx_input
from layerlens.models.pt2_archive import load_exported_program
from layerlens.models.sniff import sniff_format
from layerlens.models.torchscript_graph import inlined_forward_graph
from layerlens.models.torchscript_model import (
    TorchScriptModel,
    feeds_embedding,
    forward_arguments,
    load_torchscript_module,
)

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is present, else ``cpu``."""
    if device not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, got '{device}'")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but no CUDA device is available")
    return device


def _channel_values(name: str, values: Sequence[float] | None,
                    shape: tuple[int, ...]) -> tuple[float, ...] | None:
    if values is None:
        return None
    channels = shape[0] if shape else 1
    if len(values) not in (1, channels):
        raise InputError(
            f"{name} has {len(values)} values; the input has {channels} channels "
            f"(shape {shape}): give 1 or {channels}", options=(name,)
        )
    if name == "std" and any(v <= 0 for v in values):
        raise InputError("std values must be positive", options=("std",))
    return tuple(float(v) for v in values)


def _spec(shape: tuple[int, ...], dtype: str, mean: Sequence[float] | None,
          std: Sequence[float] | None, name: str) -> InputSpec:
    return InputSpec(shape, dtype, _channel_values("mean", mean, shape),
                     _channel_values("std", std, shape), name)


def _torchscript_input(module: torch.jit.ScriptModule, input_name: str | None
                       ) -> tuple[str, str]:
    """(name, dtype) of a TorchScript model's analysed input. The file records no tensor
    dtypes: an input that indexes an embedding takes int64 token ids, others float32."""
    arguments = dict(forward_arguments(module))
    name = choose_input(list(arguments), input_name, "the TorchScript model")
    if arguments[name] != "Tensor":
        raise ModelFormatError(f"TorchScript forward's argument '{name}' has type "
                               f"{arguments[name]}; the analysed input must be a tensor: "
                               "choose another with input_name", options=("input_name",))
    index = list(arguments).index(name) + 1  # graph input 0 is the module
    return name, "int64" if feeds_embedding(inlined_forward_graph(module), index) \
        else "float32"


def _onnx_shape(declared: tuple[int | None, ...], input_shape: tuple[int, ...] | None,
                sample_shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    """The ONNX graph's shape where static, else the user's, else a fitting dataset shape."""
    def fits(shape: tuple[int, ...]) -> bool:
        return len(shape) == len(declared) and all(
            d is None or d == s for d, s in zip(declared, shape, strict=True))

    shown = tuple("?" if d is None else d for d in declared)
    if input_shape is not None:
        if not fits(input_shape):
            raise ShapeMismatchError(
                f"input_shape {input_shape} contradicts the ONNX input shape {shown}",
                options=("input_shape",))
        return input_shape
    if all(d is not None for d in declared):
        return tuple(int(d) for d in declared if d is not None)
    for shape in sample_shapes:
        if fits(shape):
            return shape
    raise ShapeMismatchError(
        f"the ONNX input shape {shown} has symbolic dimensions and no dataset sample shape "
        "fits it; give input_shape", options=("input_shape",))


def load_model(
    path: str | Path,
    *,
    input_shape: Sequence[int] | None = None,
    sample_shapes: Sequence[Sequence[int]] = (),
    device: str = "auto",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    name: str | None = None,
    max_bytes: int = MAX_MODEL_BYTES,
    data_beside: bool = True,
    input_name: str | None = None,
    inputs: InputArrays | None = NO_INPUTS,
) -> ProbedModel:
    """Load an ONNX model, TorchScript archive or ``torch.export`` ``.pt2`` archive as a
    :class:`ProbedModel`.

    Parameters
    ----------
    path : path to the model file; its format is recognised from its bytes.
    input_shape : shape of one sample (no batch axis), e.g. ``(1, 8, 8)``.
        Needed only when the file does not fix it.
    sample_shapes : candidate shapes from the dataset, tried in order when
        neither the file nor ``input_shape`` fixes the input.
    device : ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    mean, std : optional per-channel normalisation ``(x - mean) / std``.
    name : the file's name in messages (default the name on disk; a service passes the
        name the file was uploaded as).
    max_bytes : most an ONNX model may take with its external data (bytes; an archive's
        entries expanded).
    data_beside : read an ONNX file's external data from the file's own folder (the
        command line); False for an upload, whose data files come inside it.
    input_name : the model input the dataset's samples feed (the analysed one); default
        the first.
    inputs : the dataset's arrays for the model's other inputs (InputError naming any
        input they miss); None where no dataset is at hand (an upload's inspection): the
        other inputs are zeros of their declared shapes.

    ``path`` may also be a zip or tar of an ONNX export folder
    (:mod:`layerlens.models.onnx_files`).
    """
    path = Path(path)
    label = f"model file '{name or path.name}'"
    if not path.is_file():
        raise ModelFormatError(f"{label} does not exist")
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    device = resolve_device(device)
    explicit = tuple(int(d) for d in input_shape) if input_shape is not None else None
    if explicit is not None and (not explicit or any(d <= 0 for d in explicit)):
        raise InputError(f"input_shape must be positive integers, got {explicit}",
                         options=("input_shape",))
    candidates = [tuple(int(d) for d in s) for s in sample_shapes]

    if sniff_format(data, label) == "pt2":
        program = load_exported_program(data, label)
        analysed, shape, dtype = exported_input(program, explicit, candidates, input_name)
        return ExportedModel(program, sha256=sha256, device=device, inputs=inputs,
                             input_spec=_spec(shape, dtype, mean, std, analysed))
    if sniff_format(data, label) == "onnx":
        proto, sha256 = read_onnx(path, data, label, max_bytes=max_bytes,
                                  data_beside=data_beside)
        analysed, dtype, declared = onnx_input(proto, input_name)
        shape = _onnx_shape(declared, explicit, candidates)
        return OnnxModel(proto, sha256=sha256, device=device, inputs=inputs,
                         input_spec=_spec(shape, dtype, mean, std, analysed))

    module = load_torchscript_module(data, device)
    analysed, dtype = _torchscript_input(module, input_name)
    tried = [explicit] if explicit is not None else list(dict.fromkeys(candidates))
    if not tried:
        raise ShapeMismatchError(
            "a TorchScript file does not record its input shape; give input_shape "
            "(one sample, e.g. 1,28,28)", options=("input_shape",))
    first_error: ShapeMismatchError | None = None
    for shape in tried:
        try:
            model = TorchScriptModel(module, sha256=sha256, device=device, inputs=inputs,
                                     input_spec=_spec(shape, dtype, mean, std, analysed))
        except ShapeMismatchError as exc:
            first_error = first_error or exc
            continue
        if not model.layers:
            raise ModelFormatError(
                f"{label} has no layers: layerlens lists the outputs of a TorchScript model's "
                "submodules, and found none to capture (modules called only inside if or "
                "loop bodies are not listed); wrap the computation in submodules")
        return model
    assert first_error is not None
    if len(tried) > 1:
        raise ShapeMismatchError(f"{first_error} (tried sample shapes {tried})",
                                 options=first_error.options) from first_error
    raise first_error
