"""An ONNX model with external data as ONE file: a normalised tar of the files it needs.

torch's default exporter writes ``f.onnx`` beside ``f.onnx.data``. layerlens addresses
such a model by the sha256 of a *normalised tar* of its files: members sorted by name,
regular files only, mode 0644, owner 0, time 0, PAX format. ``layerlens analyze f.onnx``
reports that address, and the API stores exactly that tar for an upload of the same files
as several ``file`` parts, so both name the model alike.

Member names are relative POSIX paths inside the model's folder (:func:`member_name`).
Standard library only: the HTTP API imports this module.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Protocol, cast


def member_name(name: str) -> str:
    """``name`` as a normalised relative path (``./a//b`` -> ``a/b``).

    Raises
    ------
    ValueError
        When the name is empty, absolute, holds a ``..`` component, a backslash or a NUL:
        a file outside the folder, or one that no folder can hold.
    """
    if not name or "\\" in name or "\x00" in name:
        raise ValueError(f"'{name}' is not a plain relative file name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"'{name}' is an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"'{name}' leads out of its folder (..)")
    if not parts:
        raise ValueError(f"'{name}' names no file")
    return "/".join(parts)


class Writer(Protocol):
    """Where a tar goes: anything with ``write(bytes)``."""

    def write(self, data: bytes, /) -> object: ...


def write_tar(files: Sequence[tuple[str, Path]], out: Writer) -> None:
    """Write the normalised tar of ``files`` (member name, local file) to ``out``.

    Raises ``ValueError`` on an unsafe or repeated member name.
    """
    names = [member_name(name) for name, _ in files]
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"'{repeated[0]}' is given twice")
    with tarfile.open(fileobj=cast(BinaryIO, out), mode="w|",
                      format=tarfile.PAX_FORMAT) as archive:
        for name, (_, path) in sorted(zip(names, files, strict=True)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
            with path.open("rb") as handle:
                archive.addfile(info, handle)


class _Digest:
    """A write-only file that hashes what it is given."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


def tar_sha256(files: Sequence[tuple[str, Path]]) -> str:
    """The sha256 of :func:`write_tar`'s output, computed without writing it anywhere."""
    digest = _Digest()
    write_tar(files, digest)
    return digest.hash.hexdigest()
