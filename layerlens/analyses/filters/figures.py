"""Filter figures: the filters as a mosaic of images (2-D) or small curves (1-D), the
average frequency response (with the mean spectrum and orientation profile for 2-D), and
the response over training steps (a checkpoint series)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from layerlens.analyses.filters.science import Response2d
from layerlens.report.plots import plt

#: Filters drawn at most (the first ones, in output-channel order).
MAX_FILTERS = 128
_PER_ROW = 8
_MIN_TILE_PX = 40  # tiles are upscaled to at least this many pixels
_GAP_PX = 4  # white between tiles


def filter_mosaic(weight: np.ndarray) -> np.ndarray:
    """The first :data:`MAX_FILTERS` 2-D filters of ``weight`` (C, C_in, kh, kw) as one
    picture in [0, 1], 8 to a row, white between tiles: RGB when C_in is 3,
    else grey (input channels averaged). Each filter is scaled by its own largest |weight|,
    so 0.5 is zero."""
    shown = np.asarray(weight[:MAX_FILTERS], dtype=np.float64)
    tiles = np.moveaxis(shown, 1, -1) if shown.shape[1] == 3 else shown.mean(axis=1)
    peak = np.abs(tiles).reshape(len(tiles), -1).max(axis=1)
    peak = np.where(peak > 0, peak, 1.0).reshape((-1,) + (1,) * (tiles.ndim - 1))
    tiles = 0.5 + 0.5 * tiles / peak
    scale = max(1, -(-_MIN_TILE_PX // max(tiles.shape[1:3])))
    tiles = np.repeat(np.repeat(tiles, scale, axis=1), scale, axis=2)
    n, height, width = tiles.shape[:3]
    cols = min(_PER_ROW, n)
    rows = -(-n // cols)
    step_y, step_x = height + _GAP_PX, width + _GAP_PX
    canvas = np.ones((rows * step_y - _GAP_PX, cols * step_x - _GAP_PX, *tiles.shape[3:]))
    for i, tile in enumerate(tiles):
        top, left = (i // cols) * step_y, (i % cols) * step_x
        canvas[top:top + height, left:left + width] = tile
    return canvas


def filter_curves_figure(weight: np.ndarray, *, title: str) -> Any:
    """The first :data:`MAX_FILTERS` 1-D filters of ``weight`` (C, C_in, k) as small curves
    (input channels averaged), 8 to a row, each on its own scale."""
    shown = np.asarray(weight[:MAX_FILTERS], dtype=np.float64).mean(axis=1)
    cols = min(8, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols + 0.4, 0.8 * rows + 0.6),
                             squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i < len(shown):
            ax.axhline(0.0, color="0.8", lw=0.5)
            ax.plot(shown[i], color="tab:blue", lw=0.9)
            ax.set_title(str(i), fontsize=6, pad=1)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def afr_figure(frequencies: np.ndarray, afr: np.ndarray, *, title: str) -> Any:
    """The average frequency response of a 1-D bank against frequency."""
    fig, ax = plt.subplots(figsize=(5.6, 3.0))
    ax.plot(frequencies, afr, color="tab:blue", lw=1.2)
    ax.set_xlim(0.0, 0.5)
    ax.set_xlabel("frequency (cycles / sample)", fontsize=8)
    ax.set_ylabel("mean |H(f)|", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def response_2d_figure(response: Response2d, *, title: str) -> Any:
    """The mean spectrum (image, zero frequency at the centre), its radial profile (the AFR)
    and its orientation profile, side by side."""
    fig, (image, radial, angular) = plt.subplots(1, 3, figsize=(10.0, 3.0))
    half = 0.5
    mesh = image.imshow(response.spectrum, origin="lower", cmap="magma",
                        extent=(-half, half, -half, half))
    image.set_xlabel("f_x (columns)", fontsize=8)
    image.set_ylabel("f_y (rows)", fontsize=8)
    image.set_title("mean |H(f_x, f_y)|", fontsize=8)
    fig.colorbar(mesh, ax=image, fraction=0.046, pad=0.04)
    radial.plot(response.frequencies, response.radial, color="tab:blue", lw=1.2)
    radial.set_xlim(0.0, 0.5)
    radial.set_xlabel("|f| (cycles / sample)", fontsize=8)
    radial.set_ylabel("mean |H| on the ring", fontsize=8)
    angular.plot(response.orientations, response.by_orientation, "o-", color="tab:orange",
                 markersize=2, lw=1.0)
    angular.set_xlim(0.0, 180.0)
    angular.set_xticks([0, 45, 90, 135, 180])
    angular.set_xlabel("orientation of (f_x, f_y) (degrees)", fontsize=8)
    angular.set_ylabel("mean |H|, 0 < |f| <= 0.5", fontsize=8)
    for ax in (image, radial, angular):
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def afr_over_epochs_figure(steps: Sequence[int], frequencies: Sequence[float],
                           afr: Sequence[Sequence[float]]) -> Any:
    """One average-response curve per training step, coloured from the first step (dark) to
    the last (light).

    Parameters
    ----------
    steps : training steps (S,).
    frequencies : cycles/sample (F,).
    afr : ``afr[s][f]``, shape (S, F).
    """
    values = np.asarray(afr, dtype=float).reshape(len(steps), len(frequencies))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    cmap = plt.get_cmap("viridis")
    norm = plt.Normalize(min(steps, default=0), max(steps, default=1))
    for step, row in zip(steps, values, strict=True):
        ax.plot(frequencies, row, color=cmap(norm(step)), lw=1.1)
    ax.set_xlim(0.0, 0.5)
    ax.set_xlabel("frequency (cycles / sample)", fontsize=8)
    ax.set_ylabel("average |H(f)| over filters", fontsize=8)
    ax.set_title("First-layer average frequency response over training", fontsize=9)
    ax.tick_params(labelsize=7)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="training step")
    fig.tight_layout()
    return fig
