"""The dynamics figures of the series itself: layers x steps heatmaps and projection small
multiples (the information plane, gradient SNR and filter responses over training are drawn
by their analyses' figure modules)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from layerlens.report.plots import plt
from layerlens.report.schema import Matrix

#: Projection panels drawn per layer at most (evenly spaced steps, the first and last kept).
MAX_PANELS = 8


def _array(values: Matrix) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)


def heatmap(steps: Sequence[int], layers: Sequence[str], values: Matrix, *, title: str,
            label: str) -> Any:
    """Layers (rows, forward order) by steps (columns), values written in small maps."""
    grid = _array(values).T
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(steps) + 3.5),
                                    max(3.0, 0.32 * len(layers) + 1.5)),
                           constrained_layout=True)
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="magma", vmin=0.0,
                      vmax=1.0, interpolation="nearest")
    if len(steps) * len(layers) <= 200:
        for (row, column), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.6 else "black")
    ax.set_xticks(range(len(steps)), [str(s) for s in steps], fontsize=8)
    ax.set_yticks(range(len(layers)), [f"{i}: {n}" for i, n in enumerate(layers)], fontsize=7)
    ax.set_xlabel("training step")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label=label)
    return fig


def shown_steps(n_steps: int, most: int = MAX_PANELS) -> list[int]:
    """Indices of at most ``most`` evenly spaced steps, first and last included."""
    if n_steps <= most:
        return list(range(n_steps))
    return sorted({round(i) for i in np.linspace(0, n_steps - 1, most)})


def projection_panels(steps: Sequence[int], layer: str, coordinates: Sequence[np.ndarray | None],
                      labels: np.ndarray, hits: Sequence[float | None]) -> Any:
    """One layer's projection at each shown step, side by side, coloured by class."""
    shown = [i for i in shown_steps(len(steps)) if coordinates[i] is not None]
    fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(2.4 * max(len(shown), 1), 2.7),
                             constrained_layout=True, squeeze=False)
    for ax, index in zip(axes[0], shown, strict=False):
        points = coordinates[index]
        assert points is not None
        ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=4, linewidths=0)
        hit = hits[index]
        ax.set_title(f"step {steps[index]}" + ("" if hit is None else f"\nNH {hit:.2f}"),
                     fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"layer {layer}", fontsize=9)
    return fig
