"""The linear probe's figure: train and test accuracy against depth, with chance level."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from layerlens.analyses.linear_probe.spec import ProbeLayer
from layerlens.report.plots import plt


def accuracy_figure(names: Sequence[str], probed: Sequence[ProbeLayer], chance: float) -> Any:
    """Accuracy (fraction correct) of every probed layer, x = the layer's place in ``names``."""
    position = {name: i for i, name in enumerate(names)}
    depth = [position[row.layer] for row in probed]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.5),
                           constrained_layout=True)
    ax.plot(depth, [row.train_accuracy for row in probed], "o-", label="train split")
    ax.plot(depth, [row.test_accuracy for row in probed], "s-", label="test split")
    ax.axhline(chance, color="grey", linestyle="--",
               label=f"chance (majority class, {chance:.2f})")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("layer (forward order)")
    ax.set_ylabel("probe accuracy (fraction correct)")
    ax.set_ylim(0.0, 1.02)
    ax.set_title("Linear probe accuracy by layer")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig
