"""Read an ONNX model and its external data: a file beside its data files, or an archive.

External data (a tensor's ``external_data``: ``location``, ``offset``, ``length``) is read
into the tensors themselves, so the model held in memory is self-contained and nothing
is opened later. A location resolves only inside the model file's own folder: an
absolute path, a ``..`` component, a symbolic link or anything but a regular file is
refused. An archive (a zip or an uncompressed tar of the export folder) is read in
memory and never extracted: its entries must be regular files with safe names that
expand to at most ``max_bytes`` together, and exactly one of them an ONNX model.

The model's content address (sha256): a self-contained file's own bytes; an archive's own
bytes; a file with external data, the normalised tar of it and its data files
(:mod:`layerlens.models.bundle`), which is what the API stores for the same files.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import _get_all_tensors

from layerlens.errors import ModelFormatError
from layerlens.models.bundle import member_name, tar_sha256
from layerlens.models.sniff import is_tar, is_zip

#: Most an ONNX model may take with its weights (bytes): protobuf's limit on one message.
MAX_MODEL_BYTES = 2**31 - 1
#: Element sizes below one byte (4-bit types): their tensors are not size-checked.
_SUB_BYTE_TYPES = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
_FIX = ("upload the .onnx with its data files (several file parts, or a .zip or .tar of "
        "the export folder)")

#: ``location -> the whole data file's bytes``; raises :class:`ModelFormatError`.
ReadExternal = Callable[[str], bytes]


def parse_onnx(data: bytes, label: str, read_external: ReadExternal | None = None
               ) -> onnx.ModelProto:
    """Parse an ONNX model held in memory, read its external data with ``read_external``
    (refused when None) and run the ONNX checker."""
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(
            f"{label} is neither an ONNX model nor a TorchScript archive ({exc})"
        ) from exc
    if not _looks_like_a_model(model):
        raise ModelFormatError(
            f"{label} is neither an ONNX model nor a TorchScript archive "
            "(no graph nodes, outputs or opset)"
        )
    _read_external_data(model, label, read_external)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelFormatError(f"{label} fails the ONNX checker: {first}") from exc
    return model


def _looks_like_a_model(model: onnx.ModelProto) -> bool:
    return bool(model.graph.node and model.graph.output and model.opset_import)


def _read_external_data(model: onnx.ModelProto, label: str,
                        read_external: ReadExternal | None) -> None:
    """Move every tensor's external data into the tensor."""
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        if read_external is None:
            raise ModelFormatError(f"{label} stores tensor '{tensor.name}' as external data, "
                                   f"and no data files came with it; {_FIX}")
        info = {entry.key: entry.value for entry in tensor.external_data}
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else None
        except ValueError as exc:
            raise ModelFormatError(f"{label}: tensor '{tensor.name}' has a malformed "
                                   f"external data offset or length ({exc})") from exc
        location = info.get("location", "")
        try:
            location = member_name(location)
        except ValueError as exc:
            raise ModelFormatError(f"{label}: tensor '{tensor.name}' refers to external data "
                                   f"{exc}; data files must lie in the model's own folder"
                                   ) from exc
        blob = read_external(location)
        end = len(blob) if length is None else offset + length
        if offset < 0 or end > len(blob) or end < offset:
            raise ModelFormatError(f"{label}: tensor '{tensor.name}' reads bytes {offset} to "
                                   f"{end} of '{location}', which has {len(blob)}")
        tensor.raw_data = blob[offset:end]
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        _check_size(tensor, label)


def _check_size(tensor: onnx.TensorProto, label: str) -> None:
    if tensor.data_type in _SUB_BYTE_TYPES or tensor.data_type == onnx.TensorProto.STRING:
        return
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    expected = int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
    if len(tensor.raw_data) != expected:
        raise ModelFormatError(f"{label}: tensor '{tensor.name}' has {len(tensor.raw_data)} "
                               f"bytes of external data; its shape needs {expected}")


def read_onnx(path: Path, data: bytes, label: str, *, max_bytes: int = MAX_MODEL_BYTES,
              data_beside: bool = True) -> tuple[onnx.ModelProto, str]:
    """The model in ``data`` (the bytes of ``path``) with its external data, and its sha256.

    ``data`` is an ONNX file, whose data files are read from ``path``'s folder (unless
    ``data_beside`` is False: an upload, whose data files come in it), or a zip or tar of
    an export folder. ``max_bytes`` bounds the model with its data (an archive's entries,
    expanded).
    """
    if is_zip(data) or is_tar(data):
        members = _archive_members(data, label, max_bytes)
        name = _model_member(members, label)
        folder = posixpath.dirname(name)

        def from_archive(location: str) -> bytes:
            wanted = posixpath.join(folder, location)
            if wanted not in members:
                raise ModelFormatError(f"{label}: the model '{name}' refers to external data "
                                       f"'{location}', which the upload does not hold; {_FIX}")
            return members[wanted]

        return parse_onnx(members[name], label, from_archive), hashlib.sha256(data).hexdigest()

    files: dict[str, Path] = {}
    cache: dict[str, bytes] = {}

    def from_folder(location: str) -> bytes:
        if location not in cache:
            file = _data_file(path.parent, location, label)
            if len(data) + sum(map(len, cache.values())) + file.stat().st_size > max_bytes:
                raise ModelFormatError(f"{label} and its data files exceed {_mib(max_bytes)}")
            cache[location], files[location] = file.read_bytes(), file
        return cache[location]

    model = parse_onnx(data, label, from_folder if data_beside else None)
    if not files:
        return model, hashlib.sha256(data).hexdigest()
    try:
        return model, tar_sha256([(path.name, path), *files.items()])
    except ValueError as exc:  # the model file itself named as a data file
        raise ModelFormatError(f"{label}: {exc} as the model and as its data") from exc


def _data_file(folder: Path, location: str, label: str) -> Path:
    """``folder/location`` when it is a regular file reached without a symbolic link."""
    current = folder
    for part in location.split("/"):
        current = current / part
        try:
            mode = current.lstat().st_mode
        except OSError as exc:
            raise ModelFormatError(f"{label} refers to external data '{location}', which is "
                                   "not in the model's folder; keep the data files the "
                                   "exporter wrote beside the .onnx") from exc
        if stat.S_ISLNK(mode):
            raise ModelFormatError(f"{label}: external data '{location}' goes through a "
                                   "symbolic link; data files must lie in the model's own "
                                   "folder")
    if not stat.S_ISREG(mode):
        raise ModelFormatError(f"{label}: external data '{location}' is not a regular file")
    return current


def _mib(size: int) -> str:
    return f"{size / 1024**2:.0f} MiB"


def _archive_members(data: bytes, label: str, max_bytes: int) -> dict[str, bytes]:
    """Every file of a zip or tar, by normalised name; refuses links, special files, unsafe
    or repeated names and an expansion over ``max_bytes``."""
    try:
        entries = _zip_entries(data, label) if is_zip(data) else _tar_entries(data, label)
        members: dict[str, bytes] = {}
        total = 0
        for raw_name, size, read in entries:
            try:
                name = member_name(raw_name)
            except ValueError as exc:
                raise ModelFormatError(f"{label} holds an unsafe entry name: {exc}") from exc
            if name in members:
                raise ModelFormatError(f"{label} holds '{name}' twice")
            total += size
            if total > max_bytes:
                raise ModelFormatError(f"{label} expands to more than {_mib(max_bytes)}, the "
                                       "limit on a model with its data files")
            members[name] = read()
        return members
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError,
            RuntimeError, NotImplementedError) as exc:
        raise ModelFormatError(f"{label} is a damaged or unsupported archive: {exc}") from exc


_Entry = tuple[str, int, Callable[[], bytes]]


def _zip_entries(data: bytes, label: str) -> Iterator[_Entry]:
    """(name, size, read) of each file in a zip; refuses symbolic links."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ModelFormatError(f"{label} holds a symbolic link, '{info.filename}'; "
                                       "archive the data files themselves")
            yield info.filename, info.file_size, partial(archive.read, info)


def _tar_entries(data: bytes, label: str) -> Iterator[_Entry]:
    """(name, size, read) of each file in a tar; refuses links and special files."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            if member.isdir():
                continue
            if not member.isreg():
                kind = "link" if member.issym() or member.islnk() else "special file"
                raise ModelFormatError(f"{label} holds a {kind}, '{member.name}'; archive "
                                       "the data files themselves")
            yield member.name, member.size, partial(_read_member, archive, member)


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    assert handle is not None  # a regular file
    return handle.read()


def _model_member(members: dict[str, bytes], label: str) -> str:
    """The one entry that is an ONNX model (``.onnx`` entries are tried first)."""
    named = [name for name in members if name.lower().endswith(".onnx")]
    models = [name for name in (named or members) if _parses(members[name])]
    if len(models) != 1:
        found = f"{len(models)} ONNX models ({', '.join(sorted(models))})" if models else \
            "no ONNX model"
        raise ModelFormatError(f"{label} holds {found}; {_FIX}, one model per upload")
    return models[0]


def _parses(data: bytes) -> bool:
    try:
        return _looks_like_a_model(onnx.load_model_from_string(data))
    except (DecodeError, ValueError, RuntimeError):
        return False
