"""Gradient SNR figures: both ratios per layer (one model), and the SNR over training steps
with the drift-to-diffusion transition marked (a checkpoint series)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from layerlens.report.plots import layer_row_figure, layer_ticks, plt

#: The transition is where the SNR has fallen to this fraction of its peak.
FALL = 0.5


def _values(values: Sequence[float | None]) -> np.ndarray:
    """Floats with NaN for missing values."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def snr_by_layer_figure(layers: Sequence[str], snr: Sequence[float | None],
                        snr_norms: Sequence[float | None], *, title: str) -> Any:
    """Both ratios per weighted layer, forward order, on a log scale (missing: no bar)."""
    fig, rows = layer_row_figure(len(layers), panels=2, panel_inches=1.6, title=title)
    for values, label, panel in ((_values(snr), "||mean g|| / ||std g||", 0),
                                 (_values(snr_norms), "mean ||g|| / std ||g||", 1)):
        positive = values[np.isfinite(values) & (values > 0)]
        for block, axes in rows:
            ax = axes[panel]
            index = list(block)
            ax.bar(index, np.nan_to_num(values[index]), color="tab:blue" if panel == 0
                   else "tab:orange", width=0.7)
            ax.set_ylabel(label, fontsize=8)
            if positive.size:
                ax.set_yscale("log")
                ax.set_ylim(positive.min() / 2, positive.max() * 2)
            if panel == 1:
                layer_ticks(ax, block, list(layers))
    return fig


def transition_step(steps: Sequence[int], snr: Sequence[float | None], *,
                    fall: float = FALL) -> int | None:
    """The drift-to-diffusion transition of one layer: the first step after the SNR's peak
    where it is at most ``fall`` times the peak; None when it never falls that far.

    Parameters
    ----------
    steps : training steps, increasing.
    snr : the layer's SNR at each step (None or NaN where missing).
    fall : fraction of the peak, in (0, 1).
    """
    if not 0 < fall < 1:
        raise ValueError(f"fall must be in (0, 1), got {fall}")
    values = _values(snr)
    if len(values) != len(steps):
        raise ValueError(f"{len(steps)} steps but {len(values)} SNR values")
    finite = np.isfinite(values)
    if not finite.any():
        return None
    peak = int(np.nanargmax(np.where(finite, values, -np.inf)))
    after = np.flatnonzero(finite[peak + 1:] & (values[peak + 1:] <= fall * values[peak]))
    return int(steps[peak + 1 + after[0]]) if after.size else None


def snr_over_epochs_figure(steps: Sequence[int], layers: Sequence[str],
                           snr: Sequence[Sequence[float | None]], *,
                           fall: float = FALL) -> Any:
    """One line per weighted layer, SNR against training step (log scale), each layer's
    transition (:func:`transition_step`) a dashed vertical line in its colour.

    Parameters
    ----------
    steps : training steps (S,).
    layers : weighted layer names (L,).
    snr : ``snr[s][l]``, shape (S, L), None where missing.
    """
    values = np.array([_values(row) for row in snr], dtype=float).reshape(len(steps),
                                                                          len(layers))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(len(layers), 1)))
    for i, name in enumerate(layers):
        ax.plot(steps, values[:, i], "o-", color=colours[i], markersize=3, lw=1.2, label=name)
        step = transition_step(steps, list(values[:, i]), fall=fall)
        if step is not None:
            ax.axvline(step, color=colours[i], ls="--", lw=0.9)
    if np.any(np.isfinite(values) & (values > 0)):
        ax.set_yscale("log")
    ax.set_xlabel("training step", fontsize=8)
    ax.set_ylabel("gradient SNR ||mean g|| / ||std g||", fontsize=8)
    ax.set_title(f"Gradient SNR over training (dashed: the SNR has fallen to "
                 f"{fall:g} of its peak)", fontsize=9)
    ax.tick_params(labelsize=7)
    if layers:
        ax.legend(fontsize=7, ncol=2 if len(layers) > 6 else 1, frameon=False)
    fig.tight_layout()
    return fig
