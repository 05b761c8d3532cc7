"""Activation-maximisation figures: optimised inputs beside the data's strongest examples."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from layerlens.analyses.activation_maximization.parametrization import is_image_shape
from layerlens.report.plots import plt


def _as_picture(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, str]:
    """An (H, W) or (H, W, 3) array for imshow, position in the data range, and a note."""
    span = np.maximum(high - low, 1e-12)
    scaled = np.clip((x - low) / span, 0.0, 1.0)
    if x.shape[0] == 3:
        return scaled.transpose(1, 2, 0), ""
    if x.shape[0] == 1:
        return scaled[0], ""
    return scaled.mean(axis=0), f" (mean of {x.shape[0]} channels)"


_MIN_PICTURE_PIXELS = 96  # per-unit pictures are upscaled to at least this size


def side_by_side(optimised: np.ndarray, example: np.ndarray, *, low: np.ndarray,
                  high: np.ndarray) -> np.ndarray:
    """Optimised input (left) and the dataset's strongest example (right), upscaled with
    nearest neighbours, black = data min, white = data max; the report's table carries
    the numbers."""
    left, right = _as_picture(optimised, low, high)[0], _as_picture(example, low, high)[0]
    scale = max(1, -(-_MIN_PICTURE_PIXELS // max(left.shape[:2])))
    left, right = (np.repeat(np.repeat(p, scale, axis=0), scale, axis=1) for p in (left, right))
    gap = np.ones((left.shape[0], max(4, scale), *left.shape[2:]))
    return np.concatenate([left, gap, right], axis=1)


def unit_figure(optimised: np.ndarray, example: np.ndarray, *, low: np.ndarray,
                 high: np.ndarray, title: str, activation: float, example_value: float,
                 example_label: str) -> Any:
    """Vector inputs: optimised input (left) beside the dataset's strongest example (right)."""
    span = np.maximum(np.asarray(high) - np.asarray(low), 1e-12)
    flat_opt = ((optimised - low) / span).reshape(-1)
    flat_ex = ((example - low) / span).reshape(-1)
    index = np.arange(flat_opt.size)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.15, top=0.8, wspace=0.08)
    for ax, values, name, colour in (
            (axes[0], flat_opt, f"optimised: {activation:.4g}", "tab:red"),
            (axes[1], flat_ex, f"dataset max: {example_value:.4g} (class {example_label})",
             "tab:blue")):
        if values.size <= 64:
            ax.bar(index, values, color=colour, width=0.8)
        else:
            ax.step(index, values, where="mid", color=colour, lw=1.0)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("input feature", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("position in data range\n(0 = min, 1 = max)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def grid_figure(inputs: np.ndarray, units: Sequence[int], activations: np.ndarray, *,
                 low: np.ndarray, high: np.ndarray, title: str) -> Any:
    """All of a layer's optimised inputs: image tiles, or a unit x feature heatmap."""
    if is_image_shape(inputs.shape[1:]):
        cols = min(8, len(units))
        rows = -(-len(units) // cols)
        width = max(1.3 * cols + 0.4, 5.0)  # inches; wide enough for the title
        heading = textwrap.fill(title, width=int(width * 13)) + (
            "\n(black = data min, white = data max)")
        title_inches = 0.18 * (heading.count("\n") + 1) + 0.35
        height = 1.5 * rows + title_inches
        fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
        side = max(0.02, 0.5 - (1.3 * cols + 0.4) / (2 * width))
        fig.subplots_adjust(left=side, right=1 - side, bottom=0.03,
                            top=1 - title_inches / height, wspace=0.1, hspace=0.45)
        for ax in axes.flat:
            ax.axis("off")
        for ax, x, unit, value in zip(axes.flat, inputs, units, activations, strict=False):
            ax.axis("on")
            ax.imshow(_as_picture(x, low, high)[0], cmap="gray", vmin=0.0, vmax=1.0,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"unit {unit}\n{value:.3g}", fontsize=8)
        fig.suptitle(heading, fontsize=9)
    else:
        span = np.maximum(high - low, 1e-12)
        position = ((inputs - low) / span).reshape(len(inputs), -1)
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(units) + 1.6))
        fig.subplots_adjust(left=0.2, right=0.95, bottom=0.25 if len(units) < 6 else 0.12,
                            top=0.85)
        mesh = ax.imshow(position, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                         interpolation="nearest")
        ax.set_yticks(range(len(units)), [f"unit {u}: {v:.3g}"
                                          for u, v in zip(units, activations, strict=True)],
                      fontsize=7)
        ax.set_xlabel("input feature")
        fig.colorbar(mesh, ax=ax, label="value (0 = data min, 1 = data max)")
        fig.suptitle(title, fontsize=10)
    return fig
