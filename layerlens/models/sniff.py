"""Recognise and validate model files by their structure, never their extension.

A TorchScript archive is a zip whose single top folder holds ``code/`` and
``constants.pkl``; a ``torch.save`` file is a pickle (bare or zipped) that
can run arbitrary code when loaded, so it is refused before anything is
unpickled. Everything else must parse as an ONNX ``ModelProto`` and pass the
ONNX checker, with no external data.
"""

from __future__ import annotations

import io
import zipfile

import onnx
from google.protobuf.message import DecodeError

from layerlens.errors import ModelFormatError

_PICKLE_PROTOCOL_2_PLUS = b"\x80"
_TORCH_SAVE_HINT = (
    "export it with torch.jit.script(model) or torch.jit.trace(model, example) and "
    "torch.jit.save, or to ONNX with torch.onnx.export"
)


#: Most a TorchScript zip's entries may expand to beyond its own size (bytes);
#: ``torch.jit.save`` stores entries uncompressed, so only a compression bomb exceeds it.
EXPANSION_ALLOWANCE = 64 * 1024**2


def check_torchscript_archive(data: bytes, label: str) -> None:
    """Raise unless ``data`` is a zip laid out like ``torch.jit.save`` writes it, with no
    absolute or ``..`` entry names and no entries expanding far beyond the file."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFormatError(f"{label} is a damaged zip archive: {exc}") from exc
    roots = {name.split("/", 1)[0] for name in names}
    unsafe = [n for n in names if n.startswith("/") or ".." in n.split("/")]
    if len(roots) != 1 or unsafe:
        raise ModelFormatError(f"{label} is a zip archive but not a TorchScript archive")
    expanded = sum(info.file_size for info in archive.infolist())
    if expanded > len(data) + EXPANSION_ALLOWANCE:
        raise ModelFormatError(
            f"{label} expands to {expanded / 1024**2:.0f} MiB from {len(data) / 1024**2:.1f} "
            "MiB (a compression bomb?); torch.jit.save writes entries uncompressed")
    root = roots.pop()
    has_code = any(name.startswith(f"{root}/code/") for name in names)
    has_constants = f"{root}/constants.pkl" in names
    if not (has_code and has_constants):
        what = "a torch.save archive" if f"{root}/data.pkl" in names else "a zip archive"
        raise ModelFormatError(
            f"{label} is {what}, not a TorchScript archive (it was not unpickled); "
            + _TORCH_SAVE_HINT
        )


def parse_onnx(data: bytes, label: str) -> onnx.ModelProto:
    """Parse and check an ONNX model held in memory; refuse external data."""
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(
            f"{label} is neither an ONNX model nor a TorchScript archive ({exc})"
        ) from exc
    graph = model.graph
    if not graph.node or not graph.output or not model.opset_import:
        raise ModelFormatError(
            f"{label} is neither an ONNX model nor a TorchScript archive "
            "(no graph nodes, outputs or opset)"
        )
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelFormatError(
                f"{label} stores tensor '{tensor.name}' as external data; "
                "layerlens accepts self-contained ONNX files only"
            )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelFormatError(f"{label} fails the ONNX checker: {first}") from exc
    float_outputs = [
        out for out in graph.output
        if out.type.tensor_type.elem_type
        in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    ]
    if not float_outputs:
        raise ModelFormatError(
            f"{label} has no float outputs; layerlens analyses networks with float outputs"
        )
    return model


def sniff_format(data: bytes, label: str) -> str:
    """``"torchscript"`` or ``"onnx"``, judged from the bytes; raises on anything else."""
    if not data:
        raise ModelFormatError(f"{label} is empty")
    if data[:4] == b"PK\x03\x04":
        check_torchscript_archive(data, label)
        return "torchscript"
    if data[:1] == _PICKLE_PROTOCOL_2_PLUS:
        raise ModelFormatError(
            f"{label} is a Python pickle (torch.save), not a TorchScript archive "
            "(it was not unpickled); " + _TORCH_SAVE_HINT
        )
    return "onnx"
