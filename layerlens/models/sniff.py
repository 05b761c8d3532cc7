"""Recognise and validate model files by their structure, never their extension.

A ``torch.export.save`` archive (``.pt2``) is a zip whose single top folder holds
``archive_format`` (read by :mod:`layerlens.models.pt2_archive`, which runs none of it).
A TorchScript archive is a zip whose single top folder holds ``code/`` and
``constants.pkl``; a ``torch.save`` file is a pickle (bare or zipped) that
can run arbitrary code when loaded, so it is refused before anything is
unpickled. A zip holding a ``.onnx`` file, or an uncompressed tar, is an ONNX
export folder (the model with its external data, read by
:mod:`layerlens.models.onnx_files`). Everything else must parse as an ONNX
``ModelProto`` (:func:`layerlens.models.onnx_files.parse_onnx`).
"""

from __future__ import annotations

import io
import zipfile

from layerlens.errors import ModelFormatError

_PICKLE_PROTOCOL_2_PLUS = b"\x80"
_GZIP = b"\x1f\x8b"
_TORCH_SAVE_HINT = (
    "save it with torch.export.save(torch.export.export(model, (example,)), 'model.pt2'), "
    "or export it to ONNX with torch.onnx.export"
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
        raise ModelFormatError(f"{label} is a zip archive but not a TorchScript archive, nor "
                               "an ONNX export folder (no .onnx file)")
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
            f"{label} is {what}, not a TorchScript archive nor an ONNX export folder (it was "
            "not unpickled); " + _TORCH_SAVE_HINT
        )


def is_zip(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04"


def is_tar(data: bytes) -> bool:
    """A POSIX (ustar, PAX or GNU) tar archive."""
    return data[257:262] == b"ustar"


def _pt2_archive(data: bytes) -> bool:
    """A zip laid out as ``torch.export.save`` writes it: one root folder holding
    ``archive_format`` (its contents are checked at load, :mod:`layerlens.models.pt2_archive`)."""
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    roots = {name.split("/", 1)[0] for name in names}
    return len(roots) == 1 and f"{roots.pop()}/archive_format" in names


def _onnx_folder_zip(data: bytes) -> bool:
    """A zip that holds a ``.onnx`` file and is not laid out as TorchScript."""
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    torchscript = any(name.endswith("/constants.pkl") for name in names)
    return not torchscript and any(name.lower().endswith(".onnx") for name in names)


def sniff_format(data: bytes, label: str) -> str:
    """``"pt2"`` (a ``torch.export.save`` archive), ``"torchscript"`` or ``"onnx"`` (a model
    file, or a zip or tar of an ONNX export folder), judged from the bytes; raises on
    anything else."""
    if not data:
        raise ModelFormatError(f"{label} is empty")
    if is_zip(data):
        if _pt2_archive(data):
            return "pt2"
        if _onnx_folder_zip(data):
            return "onnx"
        check_torchscript_archive(data, label)
        return "torchscript"
    if is_tar(data):
        return "onnx"
    if data[:2] == _GZIP:
        raise ModelFormatError(f"{label} is gzip-compressed; send the export folder as a "
                               ".zip or an uncompressed .tar")
    if data[:1] == _PICKLE_PROTOCOL_2_PLUS:
        raise ModelFormatError(
            f"{label} is a Python pickle (torch.save), not a TorchScript archive "
            "(it was not unpickled); " + _TORCH_SAVE_HINT
        )
    return "onnx"
