"""The similarity figure: a layer x layer heatmap of CKA, labels thinned for many layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from layerlens.report.plots import DPI, MAX_WIDTH_PX, plt

#: At most this many tick labels per axis; beyond it every k-th layer is labelled.
MAX_TICK_LABELS = 40
#: Longer layer names are shortened in the middle.
MAX_LABEL_CHARS = 32
#: Cells annotated with their value when both axes have at most this many layers.
MAX_ANNOTATED = 12


def short_label(name: str, limit: int = MAX_LABEL_CHARS) -> str:
    """``name``, or its start and end around an ellipsis when longer than ``limit``."""
    if len(name) <= limit:
        return name
    keep = limit - 1
    return f"{name[:keep - keep // 2]}…{name[-(keep // 2):]}"


def thinned_ticks(names: Sequence[str]) -> tuple[list[int], list[str]]:
    """Tick positions and labels: every layer up to :data:`MAX_TICK_LABELS`, else every k-th
    (the first and last always), each label ``index: name`` (the name alone when it is the
    index)."""
    step = max(1, -(-len(names) // MAX_TICK_LABELS))
    positions = list(range(0, len(names), step))
    if positions[-1] != len(names) - 1:
        positions.append(len(names) - 1)
    return positions, [short_label(names[i]) if names[i] == str(i) else
                       f"{i}: {short_label(names[i])}" for i in positions]


def heatmap_figure(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], *,
                   row_title: str, col_title: str, value_label: str, title: str) -> Any:
    """``matrix`` (len(rows), len(cols)) as a heatmap, rows top to bottom in forward order;
    NaN cells grey. Colour scale 0..1, extended below 0 when a value is negative."""
    n_rows, n_cols = matrix.shape
    size = float(np.clip(0.28 * max(n_rows, n_cols), 4.0, MAX_WIDTH_PX / DPI - 3.5))
    fig, ax = plt.subplots(figsize=(size + 3.5, size + 2.5), constrained_layout=True)
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    finite = matrix[np.isfinite(matrix)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=low, vmax=1.0,
                      interpolation="nearest", aspect="auto")
    fig.colorbar(image, ax=ax, label=value_label, shrink=0.8)
    fontsize = 8 if max(n_rows, n_cols) <= 24 else 6
    positions, labels = thinned_ticks(cols)
    ax.set_xticks(positions, labels, rotation=60, ha="right", rotation_mode="anchor",
                  fontsize=fontsize)
    positions, labels = thinned_ticks(rows)
    ax.set_yticks(positions, labels, fontsize=fontsize)
    ax.set_xlabel(col_title)
    ax.set_ylabel(row_title)
    ax.set_title(title, fontsize=10)
    if n_rows <= MAX_ANNOTATED and n_cols <= MAX_ANNOTATED:
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if value > low + 0.6 * (1.0 - low) else "white")
    return fig
