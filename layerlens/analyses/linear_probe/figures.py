"""The linear probe's figure: train and test accuracy against depth, with chance level."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from layerlens.analyses.linear_probe.spec import ProbeLayer
from layerlens.report.plots import layer_row_figure, layer_ticks


def accuracy_figure(names: Sequence[str], probed: Sequence[ProbeLayer], chance: float) -> Any:
    """Accuracy (fraction correct) of every probed layer, x = the layer's place in ``names``,
    in rows of layers (:func:`~layerlens.report.plots.layer_row_figure`)."""
    position = {name: i for i, name in enumerate(names)}
    fig, rows = layer_row_figure(len(names), panel_inches=2.6,
                                 title="Linear probe accuracy by layer", names=names)
    for row, (block, (ax,)) in enumerate(rows):
        here = [p for p in probed if position[p.layer] in block]
        depth = [position[p.layer] for p in here]
        ax.plot(depth, [p.train_accuracy for p in here], "o-", markersize=4,
                label="train split")
        ax.plot(depth, [p.test_accuracy for p in here], "s-", markersize=4, label="test split")
        ax.axhline(chance, color="grey", linestyle="--",
                   label=f"chance (majority class, {chance:.2f})")
        layer_ticks(ax, block, names)
        ax.set_ylabel("accuracy\n(fraction correct)")
        ax.set_ylim(0.0, 1.02)
        if row == 0:
            ax.legend(loc="lower right", fontsize=8)
    return fig
