"""The dynamics figures: information-plane trajectories, layers x steps heatmaps, projection
small multiples, gradient SNR and first-layer frequency response over training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from layerlens.report.plots import plt
from layerlens.report.schema import Compression, Matrix

#: Projection panels drawn per layer at most (evenly spaced steps, the first and last kept).
MAX_PANELS = 8


def _array(values: Matrix) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)


def _step_colors(steps: Sequence[int]) -> tuple[Any, Any]:
    norm = plt.Normalize(min(steps), max(max(steps), min(steps) + 1))
    return plt.get_cmap("viridis"), norm


def information_plane_trajectories(steps: Sequence[int], layers: Sequence[str], i_xt: Matrix,
                                   i_ty: Matrix, compression: Sequence[Compression], *,
                                   estimator: str) -> Any:
    """One trajectory per layer through (I(X;T), I(T;Y)) over the steps, points coloured by
    step (Shwartz-Ziv & Tishby's figure); a star marks each compressed layer's peak."""
    x, y = _array(i_xt), _array(i_ty)
    cmap, norm = _step_colors(steps)
    fig, ax = plt.subplots(figsize=(8.0, 5.5), constrained_layout=True)
    for column in range(len(layers)):
        ok = np.isfinite(x[:, column]) & np.isfinite(y[:, column])
        if not ok.any():
            continue
        ax.plot(x[ok, column], y[ok, column], color="0.7", linewidth=1, zorder=1)
        ax.scatter(x[ok, column], y[ok, column], c=np.asarray(steps)[ok], cmap=cmap, norm=norm,
                   s=28, zorder=2, edgecolors="none")
        last = np.flatnonzero(ok)[-1]
        ax.annotate(f"{column}", (x[last, column], y[last, column]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
        entry = compression[column]
        if entry.compressed and entry.peak_step is not None:
            at = list(steps).index(entry.peak_step)
            ax.scatter([x[at, column]], [y[at, column]], marker="*", s=140, facecolors="none",
                       edgecolors="tab:red", zorder=3)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="training step")
    ax.set_xlabel("I(X;T) [bits]")
    ax.set_ylabel("I(T;Y) [bits]")
    ax.set_title(f"Information plane over training ({estimator}); numbers: layer index; "
                 "red star: peak before compression", fontsize=10)
    return fig


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


def snr_figure(steps: Sequence[int], layers: Sequence[str], snr: Matrix, *,
               title: str) -> Any:
    """Gradient SNR of each weighted layer over training (log scale); a dot marks each
    layer's peak, after which the drift gives way to diffusion."""
    values = _array(snr)
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(layers), 1)))
    for column, (name, color) in enumerate(zip(layers, colors, strict=False)):
        series = values[:, column]
        ok = np.isfinite(series) & (series > 0)
        if not ok.any():
            continue
        ax.plot(np.asarray(steps)[ok], series[ok], color=color, label=f"{column}: {name}")
        peak = int(np.nanargmax(np.where(ok, series, -np.inf)))
        ax.scatter([steps[peak]], [series[peak]], color=color, s=30, zorder=3)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("gradient SNR")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def afr_figure(steps: Sequence[int], frequencies: Sequence[float], afr: Sequence[Sequence[float]],
               *, layer: str) -> Any:
    """The first layer's average frequency response, one curve per step coloured by step."""
    cmap, norm = _step_colors(steps)
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    for step, curve in zip(steps, afr, strict=True):
        ax.plot(frequencies, curve, color=cmap(norm(step)), linewidth=1.2)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="training step")
    ax.set_xlabel("frequency (cycles per sample)")
    ax.set_ylabel("average |H(w)|")
    ax.set_title(f"Average frequency response of {layer} over training", fontsize=10)
    return fig
