"""PNG figures (matplotlib, Agg backend: no display needed).

The one place that selects the backend: figures elsewhere import ``plt`` from here.

Per-layer charts (one x position per layer) wrap into rows of at most
:data:`LAYERS_PER_ROW` layers (400 layers: 10 rows of 40), each row at least
:data:`MIN_ROW_PX` pixels tall, no PNG wider than :data:`MAX_WIDTH_PX`; every
tick label reads ``index: name``. :func:`layer_row_figure` lays them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from layerlens.report.schema import ActivationLayer

__all__ = ["DPI", "LAYERS_PER_ROW", "MAX_WIDTH_PX", "MIN_ROW_PX", "activation_summary_png",
           "layer_label", "layer_row_figure", "layer_rows", "layer_ticks", "plt", "short_label"]

#: Pixels per inch of every saved figure (the artifact writer saves at this too).
DPI = 100
#: A per-layer chart puts at most this many layers side by side, then starts a new row.
LAYERS_PER_ROW = 40
#: Every row of a per-layer chart is at least this tall in the PNG (pixels).
MIN_ROW_PX = 300
#: No chart PNG is wider than this (pixels), so the page shrinks it at most ~1.4x.
MAX_WIDTH_PX = 1600
#: Tick labels longer than this are shortened in the middle.
MAX_LABEL_CHARS = 32
_TICK_FONT = 8  # points
_INCHES_PER_LAYER = 0.32
_CHAR_INCHES = 0.05  # height of one character of a tick label rotated 60 degrees
_PANEL_GAP = 0.15  # between stacked panels of a row (inches)
_TITLE_INCHES = 0.5
_LEFT_INCHES, _RIGHT_INCHES = 1.3, 0.3


def class_colors(n_classes: int) -> list[tuple[float, float, float, float]]:
    """One RGBA colour per class: tab10, tab20, or turbo beyond 20 classes."""
    if n_classes <= 20:
        cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
        return [cmap(index) for index in range(n_classes)]
    cmap = plt.get_cmap("turbo")
    return [cmap(index / max(n_classes - 1, 1)) for index in range(n_classes)]


def layer_label(name: str, op: str) -> str:
    """A tick label: the name, with the op when the name does not already say it."""
    return name if op.lower() in name.lower() else f"{name} ({op})"


def short_label(name: str, limit: int = MAX_LABEL_CHARS) -> str:
    """``name``, or its start and end around an ellipsis when longer than ``limit``."""
    if len(name) <= limit:
        return name
    keep = limit - 1
    return f"{name[:keep - keep // 2]}…{name[-(keep // 2):]}"


def layer_rows(n_layers: int, per_row: int = LAYERS_PER_ROW) -> list[range]:
    """Consecutive layer indices in rows of at most ``per_row``, all but the last full."""
    return [range(start, min(start + per_row, n_layers))
            for start in range(0, n_layers, per_row)] or [range(0)]


def layer_row_figure(n_layers: int, *, panels: int = 1, panel_inches: float = 2.4,
                     title: str, names: Sequence[str] | None = None
                     ) -> tuple[Any, list[tuple[range, list[Any]]]]:
    """A figure with one row per :func:`layer_rows` block, ``panels`` stacked axes each.

    Returns ``(figure, [(layer indices, [axes top to bottom]), ...])``; every row spans
    the same x range (a full row's), so a layer is as wide in the last row as in the first.
    Label the bottom axes with :func:`layer_ticks`. Height per row: ``panels *
    panel_inches`` plus room for the labels (sized to ``names`` when given, else to
    :data:`MAX_LABEL_CHARS`), at least :data:`MIN_ROW_PX`. Laid out by hand (constrained
    layout takes ~20 s at 400 layers).
    """
    rows = layer_rows(n_layers)
    per_row = max(len(block) for block in rows)
    width = min(max(6.0, _INCHES_PER_LAYER * per_row + 2.5), MAX_WIDTH_PX / DPI)
    longest = MAX_LABEL_CHARS + 5 if names is None else max(
        (len(f"{i}: {short_label(name)}") for i, name in enumerate(names)), default=0)
    row_inches = max(panels * (panel_inches + _PANEL_GAP) + 0.45 + _CHAR_INCHES * longest,
                     MIN_ROW_PX / DPI)
    height = row_inches * len(rows) + _TITLE_INCHES
    fig = plt.figure(figsize=(width, height))
    left, right = _LEFT_INCHES / width, 1 - _RIGHT_INCHES / width
    laid_out = []
    for r, block in enumerate(rows):
        top = height - _TITLE_INCHES - r * row_inches
        axes: list[Any] = []
        for p in range(panels):
            bottom = top - (p + 1) * (panel_inches + _PANEL_GAP) + _PANEL_GAP
            ax = fig.add_axes((left, bottom / height, right - left, panel_inches / height),
                              sharex=axes[0] if axes else None)
            ax.set_xlim(block.start - 0.6, block.start + per_row - 0.4)
            ax.grid(axis="y", alpha=0.3)
            if p < panels - 1:
                ax.tick_params(labelbottom=False)
            axes.append(ax)
        laid_out.append((block, axes))
    fig.suptitle(title, y=1 - 0.12 / height, va="top")
    return fig, laid_out


def layer_ticks(ax: Any, block: range, names: Sequence[str]) -> None:
    """Label every layer of ``block`` on ``ax``'s x axis as ``index: name``."""
    ax.set_xticks(list(block), [f"{i}: {short_label(names[i])}" for i in block],
                  rotation=60, ha="right", rotation_mode="anchor", fontsize=_TICK_FONT)


def activation_summary_png(layers: list[ActivationLayer], ops: dict[str, str],
                           path: Path) -> None:
    """Mean ± std and dead-unit fraction of each layer against depth, in rows of layers."""
    names = [layer_label(layer.layer, ops[layer.layer]) for layer in layers]
    means = np.array([layer.mean for layer in layers], dtype=float)
    stds = np.array([layer.std for layer in layers], dtype=float)
    fig, rows = layer_row_figure(len(names), panels=2, panel_inches=1.8,
                                 title="Activations by layer", names=names)
    spread = np.concatenate([means - stds, means + stds])
    spread = spread[np.isfinite(spread)]
    for block, (top, bottom) in rows:
        index = list(block)
        top.errorbar(index, means[index], yerr=stds[index], fmt="o-", capsize=3, markersize=4)
        top.set_ylabel("mean ± std")
        if spread.size and spread.max() > spread.min():  # one scale for every row
            margin = 0.05 * (spread.max() - spread.min())
            top.set_ylim(spread.min() - margin, spread.max() + margin)
        bottom.bar(index, [layers[i].dead_fraction for i in index], color="tab:red")
        bottom.set_ylabel("dead fraction")
        bottom.set_ylim(0, 1)
        layer_ticks(bottom, block, names)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
