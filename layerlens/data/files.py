"""Datasets from local ``.npz`` and ``.csv`` files."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np

from layerlens.data.dataset import Dataset
from layerlens.errors import DatasetError


def load_npz(path: Path, ref: str) -> Dataset:
    """Arrays ``x`` (n, ...) and ``y`` (n,) from an ``.npz``, and any other arrays for the
    model's other inputs (named after them); pickled objects are refused."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in ("x", "y") if key not in archive.files]
            if missing:
                raise DatasetError(f"{ref}: .npz has no array {' or '.join(missing)} "
                                   f"(found: {', '.join(archive.files) or 'nothing'})")
            x, y = archive["x"], archive["y"]
            others = {key: archive[key] for key in archive.files if key not in ("x", "y")}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DatasetError(f"{ref}: .npz holds object (pickled) arrays; "
                               "save numeric x and integer or string y") from exc
        raise DatasetError(f"{ref}: not a readable .npz file ({exc})") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{ref}: not a readable .npz file ({exc})") from exc
    return Dataset.from_arrays(ref, x, y, others=others)


_LABEL_COLUMNS = ("label", "target", "class", "y")


def load_csv(path: Path, ref: str, label_column: str | None = None) -> Dataset:
    """Numeric feature columns plus one label column (``label``/``target``/``class``/``y``,
    else the last column), with a header row."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{ref}: cannot read the CSV file ({exc})") from exc
    rows = list(csv.reader(io.StringIO(text)))
    rows = [row for row in rows if row]
    if len(rows) < 2:
        raise DatasetError(f"{ref}: the CSV needs a header row and at least one data row")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if label_column is None:
        lowered = [h.lower() for h in header]
        label_column = next((header[lowered.index(c)] for c in _LABEL_COLUMNS if c in lowered),
                            header[-1])
    if label_column not in header:
        raise DatasetError(f"{ref}: no column '{label_column}' (columns: {', '.join(header)})")
    label_at = header.index(label_column)
    if len(header) < 2:
        raise DatasetError(f"{ref}: the CSV needs at least one feature column besides the label")
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DatasetError(f"{ref}: line {number} has {len(row)} fields, "
                               f"the header has {len(header)}")
    labels = np.array([row[label_at].strip() for row in body])
    try:
        x = np.array([[float(v) for i, v in enumerate(row) if i != label_at] for row in body])
    except ValueError as exc:
        raise DatasetError(f"{ref}: feature columns must be numeric ({exc})") from exc
    if all(_is_int(label) for label in labels):
        labels = labels.astype(np.int64)
    return Dataset.from_arrays(ref, x, labels)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
