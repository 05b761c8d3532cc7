"""The mutual-information figure: the information plane, one marker per layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from layerlens.analyses.mutual_information.spec import InformationLayer
from layerlens.analyses.sections import FailedLayer, SkippedLayer
from layerlens.report.plots import plt

Row = InformationLayer | SkippedLayer | FailedLayer
#: Layers named in the figure's legend (beyond this, only their index is annotated).
_LEGEND_LAYERS = 16
#: Markers annotated with their index: every k-th beyond this many (and the last).
_ANNOTATED_LAYERS = 40


def information_plane_figure(entries: Sequence[Row], *, h_y: float, h_x: float,
                             log2_n: float, estimator: str) -> Any:
    """The information plane: I(X;T) against I(T;Y), one marker per layer in forward order.

    Layers without I(X;T) (``ksg``) are drawn as I(T;Y) against depth instead.
    Skipped layers are left out; markers carry the layer's index in ``entries`` (every
    k-th of more than 40);
    layers constant at float32 resolution (0 bits by construction) are crosses.
    """
    points = [(i, e) for i, e in enumerate(entries)
              if isinstance(e, InformationLayer) and e.I_TY is not None]
    plane = any(e.I_XT is not None for _, e in points)
    fig, ax = plt.subplots(figsize=(8.0, 5.5), constrained_layout=True)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(points), 1)))
    xs = [e.I_XT if plane and e.I_XT is not None else i for i, e in points]
    ys = [e.I_TY for _, e in points]
    ax.plot(xs, ys, color="0.75", linewidth=1, zorder=1)
    step = max(1, -(-len(points) // _ANNOTATED_LAYERS))
    for rank, ((index, entry), x, y, color) in enumerate(
            zip(points, xs, ys, colors, strict=False)):
        label = f"{index}: {entry.layer}" if len(points) <= _LEGEND_LAYERS else None
        ax.scatter([x], [y], color=color, s=45, zorder=2, label=label,
                   marker="x" if entry.constant else "o")
        if rank % step == 0 or rank == len(points) - 1:
            ax.annotate(str(index), (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    ax.axhline(h_y, color="tab:red", linestyle="--", linewidth=1, label=f"H(Y) = {h_y:.3f} bits")
    if plane:
        ax.axvline(log2_n, color="tab:blue", linestyle=":", linewidth=1,
                   label=f"log2(N) = {log2_n:.3f} bits")
        if h_x < log2_n - 1e-9:
            ax.axvline(h_x, color="tab:blue", linestyle="--", linewidth=1,
                       label=f"H(X), distinct inputs = {h_x:.3f} bits")
        ax.set_xlabel("I(X;T) [bits]")
        ax.set_xlim(0, max(log2_n, *(x for x in xs)) * 1.05 + 1e-6)
        ax.set_title(f"Information plane ({estimator}); markers: layer index, input to output")
    else:
        ax.set_xlabel("layer index (forward order)")
        ax.set_title(f"I(T;Y) by layer ({estimator}; I(X;T) is not defined for this estimator)")
    ax.set_ylabel("I(T;Y) [bits]")
    ax.set_ylim(0, max(h_y, *ys, 1e-6) * 1.1)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig
