"""Attribution figures: overlays for images, bar charts and heat strips for other inputs.

Attributions are drawn with a diverging colour map (red positive, blue negative),
each example scaled by its own largest absolute attribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from layerlens.report.plots import plt

CMAP = "RdBu_r"
#: Vector inputs up to this many features get a bar chart, longer ones a heat strip.
MAX_BARS = 64
#: Opacity of the colour where the attribution is largest (the input shows through).
MAX_OPACITY = 0.9
#: The input's grey stays below this brightness, so the colour on top stands out.
MAX_GREY = 0.55
_MIN_PICTURE_PIXELS = 96  # overlays are upscaled to at least this size


def is_image(shape: Sequence[int]) -> bool:
    """``(C, H, W)`` inputs are drawn as images."""
    return len(shape) == 3


def _scaled(attribution: np.ndarray) -> np.ndarray:
    """Attributions divided by their largest absolute value: in [-1, 1]."""
    peak = float(np.max(np.abs(attribution))) if attribution.size else 0.0
    return attribution / peak if peak > 0 else np.zeros_like(attribution)


def overlay(x: np.ndarray, attribution: np.ndarray, *, low: float, high: float) -> np.ndarray:
    """An (H', W', 3) RGB picture in [0, 1]: the input in grey, the attribution on top.

    Parameters
    ----------
    x, attribution : ndarray, shape (C, H, W); channels are averaged (input) and
        summed (attribution).
    low, high : data values drawn black and white.

    The input is grey from black (``low``) to ``MAX_GREY`` (``high``); the colour is
    ``CMAP`` at the attribution over the example's largest absolute attribution, ``s``,
    with opacity ``MAX_OPACITY * sqrt(|s|)``; upscaled with nearest neighbours to at
    least ``_MIN_PICTURE_PIXELS`` on the long side.
    """
    grey = MAX_GREY * np.clip((x.mean(axis=0) - low) / max(high - low, 1e-12), 0.0, 1.0)
    signed = _scaled(attribution.sum(axis=0))
    colour = plt.get_cmap(CMAP)((signed + 1) / 2)[..., :3]
    opacity = (MAX_OPACITY * np.sqrt(np.abs(signed)))[..., None]
    picture = (1 - opacity) * grey[..., None] + opacity * colour
    scale = max(1, -(-_MIN_PICTURE_PIXELS // max(picture.shape[:2])))
    return np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)


def example_figure(attribution: np.ndarray, *, title: str) -> Any:
    """A non-image input's attributions: bars (up to ``MAX_BARS`` features), else a heat
    strip; a (L, D) sequence as a D x L map (positions along x)."""
    if attribution.ndim == 1 and attribution.size <= MAX_BARS:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.12 * attribution.size + 2.0), 2.8))
        index = np.arange(attribution.size)
        ax.bar(index, attribution, color=np.where(attribution >= 0, "tab:red", "tab:blue"),
               width=0.8)
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_xlabel("input feature", fontsize=8)
        ax.set_ylabel("attribution", fontsize=8)
    else:
        strip = attribution.T if attribution.ndim == 2 else attribution.reshape(1, -1)
        peak = max(float(np.max(np.abs(strip))), 1e-30)
        fig, ax = plt.subplots(figsize=(8.0, 1.2 + 0.15 * min(len(strip), 32)))
        mesh = ax.imshow(strip, aspect="auto", cmap=CMAP, vmin=-peak, vmax=peak,
                         interpolation="nearest")
        ax.set_xlabel("position" if attribution.ndim == 2 else "input feature", fontsize=8)
        if attribution.ndim == 2:
            ax.set_ylabel("feature", fontsize=8)
        else:
            ax.set_yticks([])
        fig.colorbar(mesh, ax=ax, label="attribution", pad=0.01)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def grid_figure(x: np.ndarray, attributions: np.ndarray, titles: Sequence[str], *,
                low: float, high: float, title: str) -> Any:
    """Every example in one figure: a grid of overlays for images, else one row per
    example (each scaled by its own largest absolute attribution).

    Parameters
    ----------
    x, attributions : ndarray, shape (n, *input_shape).
    titles : one short caption per example.
    low, high : data values drawn black and white (images).
    """
    n = len(attributions)
    if is_image(attributions.shape[1:]):
        fig = _mosaic([overlay(a, b, low=low, high=high) for a, b in zip(x, attributions,
                                                                          strict=True)], titles)
        mappable = plt.cm.ScalarMappable(cmap=CMAP, norm=plt.Normalize(-1.0, 1.0))
        fig.colorbar(mappable, cax=fig.add_axes((0.92, 0.12, 0.015, 0.7)),
                     label="attribution / example's max |attribution|")
    else:
        flat = np.stack([_scaled(a.reshape(-1)) for a in attributions])
        fig, ax = plt.subplots(figsize=(8.0, 0.22 * n + 1.6))
        fig.subplots_adjust(left=0.2, right=0.98, bottom=0.4 if n < 6 else 0.15, top=0.85)
        mesh = ax.imshow(flat, aspect="auto", cmap=CMAP, vmin=-1.0, vmax=1.0,
                         interpolation="nearest")
        ax.set_yticks(range(n), list(titles), fontsize=7)
        ax.set_xlabel("input feature (flattened)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(mesh, ax=ax, label="attribution / example's max |attribution|", pad=0.01)
    fig.suptitle(title, fontsize=9)
    return fig


def _mosaic(pictures: Sequence[np.ndarray], titles: Sequence[str]) -> Any:
    """Equal-sized RGB pictures as ONE image, 10 to a row, a caption above each (one axes:
    far faster to draw than an axes per picture)."""
    n, (height, width) = len(pictures), pictures[0].shape[:2]
    cols = min(10, n)
    rows = -(-n // cols)
    gap, head = max(2, width // 12), max(8, height // 4)  # pixels between and above tiles
    canvas = np.ones((rows * (height + head), cols * (width + gap) - gap, 3))
    for i, picture in enumerate(pictures):
        top, left = (i // cols) * (height + head) + head, (i % cols) * (width + gap)
        canvas[top:top + height, left:left + width] = picture
    inches = 1.15 * cols / canvas.shape[1] * np.array(canvas.shape[1::-1])
    fig = plt.figure(figsize=(inches[0] / 0.88 + 0.2, inches[1] / 0.82 + 0.2))
    ax = fig.add_axes((0.01, 0.03, 0.88, 0.82))
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    for i, caption in enumerate(titles):
        ax.text((i % cols) * (width + gap) + width / 2, (i // cols) * (height + head) + head * 0.8,
                caption, ha="center", va="bottom", fontsize=7)
    return fig
