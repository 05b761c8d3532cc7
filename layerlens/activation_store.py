"""Where captured activations live while a run uses them: in memory, or on disk.

Rows arrive batch by batch. While every layer's stored rows together stay
within :data:`MEMORY_SHARE_OF_BUDGET` of the memory budget they are kept in
memory; past it, everything is written to one raw float32 file per layer in a
temporary folder and each layer is read back through a memory map when an
analysis asks for it, so a run holds one layer (or one group of layers) at a
time. The folder is deleted by :meth:`ActivationStore.close`, or when the
store is garbage-collected.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, overload

import numpy as np

#: Stored activations stay in memory up to this share of the memory budget.
MEMORY_SHARE_OF_BUDGET = 1 / 4
BYTES_PER_VALUE = 4  # float32
#: Prefix of the temporary folder (beside the report folder) that holds spilled layers.
FOLDER_PREFIX = ".layerlens-activations-"


@dataclass(frozen=True)
class StoredRows:
    """One layer's rows on disk: raw float32, C order, ``shape`` (n_samples, n_features)."""

    path: Path
    shape: tuple[int, int]

    def open(self) -> np.ndarray:
        """A read-only memory map of the rows. The pages it reads count as the process's
        memory until the map is dropped: hold it while reading this layer only."""
        return np.memmap(self.path, dtype=np.float32, mode="r", shape=self.shape)


class ActivationStore:
    """Every layer's rows, appended in sample order, in memory or spilled to disk.

    Parameters
    ----------
    memory_budget : bytes; rows are kept in memory up to
        ``MEMORY_SHARE_OF_BUDGET * memory_budget`` in all.
    folder : where the temporary folder of spilled layers is made; default the
        system's temporary directory.
    """

    def __init__(self, memory_budget: int, folder: str | Path | None = None) -> None:
        self._limit = int(memory_budget * MEMORY_SHARE_OF_BUDGET)
        self._folder = folder
        self._held = 0
        self._batches: dict[str, list[np.ndarray]] = {}
        self._rows: dict[str, int] = {}
        self._widths: dict[str, int] = {}
        self._files: dict[str, Path] = {}
        self._temporary: tempfile.TemporaryDirectory[str] | None = None

    @property
    def on_disk(self) -> bool:
        return self._temporary is not None

    def append(self, name: str, rows: np.ndarray) -> None:
        """Add ``rows`` (batch, n_features) float32 to layer ``name``."""
        self._rows[name] = self._rows.get(name, 0) + len(rows)
        self._widths[name] = int(rows.shape[1])
        if self._temporary is not None:
            self._write(name, rows)
            return
        self._batches.setdefault(name, []).append(rows)
        self._held += rows.nbytes
        if self._held > self._limit:
            self._spill()

    def finish(self, name: str) -> np.ndarray | StoredRows:
        """Layer ``name``'s rows: an array in memory, or where they lie on disk."""
        shape = (self._rows.get(name, 0), self._widths.get(name, 0))
        if name in self._files and 0 not in shape:
            return StoredRows(self._files[name], shape)
        batches = self._batches.pop(name, [])
        return np.concatenate(batches) if batches else np.zeros(shape, np.float32)

    def close(self) -> None:
        """Delete the spilled layers' folder, if any (open memory maps stay readable)."""
        if self._temporary is not None:
            self._temporary.cleanup()

    def _spill(self) -> None:
        self._temporary = tempfile.TemporaryDirectory(prefix=FOLDER_PREFIX, dir=self._folder)
        for name, batches in self._batches.items():
            for rows in batches:
                self._write(name, rows)
        self._batches.clear()
        self._held = 0

    def _write(self, name: str, rows: np.ndarray) -> None:
        assert self._temporary is not None
        path = self._files.setdefault(
            name, Path(self._temporary.name) / f"{len(self._files):05d}.f32")
        with path.open("ab") as file:
            np.ascontiguousarray(rows, dtype=np.float32).tofile(file)


class _HasValues(Protocol):
    @property
    def values(self) -> np.ndarray: ...


class LayerValues(Sequence[np.ndarray]):
    """The ``values`` of captured layers, read when indexed: a run that walks it holds one
    layer at a time (a list of every layer's memory maps would hold them all)."""

    def __init__(self, layers: Sequence[_HasValues]) -> None:
        self._layers = layers

    def __len__(self) -> int:
        return len(self._layers)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> LayerValues: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | LayerValues:
        if isinstance(index, slice):
            return LayerValues(self._layers[index])
        return self._layers[index].values

    def __iter__(self) -> Iterator[np.ndarray]:
        return (layer.values for layer in self._layers)
