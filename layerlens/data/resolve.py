"""Turn a dataset reference into a :class:`Dataset`.

References: ``builtin:<name>``, a local ``.npz``/``.csv`` path, or
``file://<path>`` under one of the configured roots. ``dataset:<id>`` and
``s3://`` references belong to the service, which resolves them to a local
file first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from layerlens.data.builtin import BUILTIN
from layerlens.data.dataset import Dataset
from layerlens.data.files import load_csv, load_npz
from layerlens.errors import DatasetError

BUILTIN_NAMES = tuple(sorted(BUILTIN))


def load_dataset_file(path: Path, ref: str) -> Dataset:
    """A dataset from a local `.npz` or `.csv` file, reported under the name `ref`."""
    if not path.is_file():
        raise DatasetError(f"dataset file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path, ref)
    if suffix == ".csv":
        return load_csv(path, ref)
    raise DatasetError(f"dataset file '{path.name}' must end in .npz or .csv")


def _under_roots(path: Path, roots: Sequence[Path], ref: str) -> Path:
    resolved = path.resolve()
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    allowed = ", ".join(str(r) for r in roots) or "none configured"
    raise DatasetError(f"{ref} is outside the allowed dataset roots ({allowed})")


def resolve_dataset(ref: str, *, roots: Sequence[Path] = (), allow_local: bool = True) -> Dataset:
    """Resolve ``ref`` to a dataset.

    Parameters
    ----------
    ref : ``builtin:digits|iris|wine|breast_cancer|ib12``, a local path, or ``file://...``.
    roots : folders that ``file://`` references must lie under.
    allow_local : accept bare local paths (the command line does; a server does not).
    """
    if ref.startswith("builtin:"):
        name = ref.removeprefix("builtin:")
        if name not in BUILTIN:
            raise DatasetError(f"unknown built-in dataset '{ref}' "
                               f"(available: {', '.join('builtin:' + n for n in BUILTIN_NAMES)})")
        return BUILTIN[name](ref)
    if ref.startswith("file://"):
        return load_dataset_file(_under_roots(Path(ref.removeprefix("file://")), roots, ref), ref)
    if ref.startswith(("dataset:", "s3://")):
        raise DatasetError(f"'{ref}' is resolved by the layerlens service; "
                           "locally, pass a .npz/.csv path or a builtin: reference")
    if allow_local and (ref.endswith((".npz", ".csv", ".NPZ", ".CSV")) or Path(ref).exists()):
        return load_dataset_file(Path(ref), ref)
    raise DatasetError(f"unknown dataset reference '{ref}' (use builtin:<name>, "
                       "a .npz/.csv path, or file://<path>)")
