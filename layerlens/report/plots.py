"""PNG figures (matplotlib, Agg backend: no display needed).

The one place that selects the backend: figures elsewhere import ``plt`` from here.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from layerlens.report.schema import ActivationLayer

__all__ = ["activation_summary_png", "layer_label", "plt"]


def layer_label(name: str, op: str) -> str:
    """A tick label: the name, with the op when the name does not already say it."""
    return name if op.lower() in name.lower() else f"{name} ({op})"


def activation_summary_png(layers: list[ActivationLayer], ops: dict[str, str],
                           path: Path) -> None:
    """Mean ± std and dead-unit fraction of each layer against depth."""
    depth = list(range(len(layers)))
    names = [layer_label(layer.layer, ops[layer.layer]) for layer in layers]
    means = [layer.mean for layer in layers]
    stds = [layer.std for layer in layers]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.45 * len(layers) + 2), 6),
                                      sharex=True, constrained_layout=True)
    top.errorbar(depth, means, yerr=stds, fmt="o-", capsize=3)
    top.set_ylabel("activation mean ± std")
    top.set_title("Activations by layer")
    bottom.bar(depth, [layer.dead_fraction for layer in layers], color="tab:red")
    bottom.set_ylabel("dead unit fraction")
    bottom.set_ylim(0, 1)
    bottom.set_xticks(depth, names, rotation=60, ha="right", fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
