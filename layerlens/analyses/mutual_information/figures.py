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
    layers constant at float32 resolution (0 bits by construction) are crosses,
    saturated layers (I(X;T) within 1% of log2 N) hollow circles.
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
        if entry.constant:
            ax.scatter([x], [y], color=color, s=45, zorder=2, label=label, marker="x")
        else:
            ax.scatter([x], [y], s=45, zorder=2, label=label, marker="o", edgecolors=color,
                       facecolors="none" if entry.saturated else color, linewidths=1.5)
        if rank % step == 0 or rank == len(points) - 1:
            ax.annotate(str(index), (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    if any(entry.saturated for _, entry in points):
        ax.scatter([], [], s=45, marker="o", facecolors="none", edgecolors="0.3",
                   label="hollow: saturated, I(X;T) within 1% of log2(N)")
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


_TRAJECTORY_MARKERS = "osD^vP*Xhp<>"


def _grid(name: str, values: Sequence[Sequence[float | None]], n_steps: int,
          n_layers: int) -> np.ndarray:
    """``values`` as a float (steps, layers) array, NaN for None; checks the shape."""
    if len(values) != n_steps or any(len(row) != n_layers for row in values):
        raise ValueError(f"{name} must have one row per step ({n_steps}) of one value per "
                         f"layer ({n_layers})")
    return np.array([[np.nan if v is None else v for v in row] for row in values],
                    dtype=np.float64).reshape(n_steps, n_layers)


def information_plane_over_epochs_figure(
        steps: Sequence[int], layers: Sequence[str],
        i_xt: Sequence[Sequence[float | None]], i_ty: Sequence[Sequence[float | None]], *,
        log2_n: float | None = None, h_y: float | None = None,
        estimator: str | None = None) -> Any:
    """The information plane over training (Shwartz-Ziv & Tishby 2017, their Fig. 2).

    One trajectory per layer (a thin line through its checkpoints in step
    order, one marker shape per layer, the index at its last point) with
    every point coloured by its step. When no point has an I(X;T) (``ksg``),
    I(T;Y) is drawn against the step instead.

    Parameters
    ----------
    steps : sequence of int, shape (S,)
        Checkpoint steps (or epochs), increasing.
    layers : sequence of str, shape (L,)
        Layer names, forward order.
    i_xt, i_ty : nested sequences, shape (S, L)
        ``[step][layer]`` estimates in bits; None or NaN: no point.
    log2_n, h_y : float, optional
        Reference lines at log2 N (I(X;T)'s ceiling) and H(Y) (I(T;Y)'s), bits.
    estimator : str, optional
        Named in the title.
    """
    x_grid = _grid("i_xt", i_xt, len(steps), len(layers))
    y_grid = _grid("i_ty", i_ty, len(steps), len(layers))
    plane = bool(np.isfinite(x_grid).any())
    step_values = np.asarray(steps, dtype=np.float64)
    if not plane:
        x_grid = np.broadcast_to(step_values[:, None], y_grid.shape)
    fig, ax = plt.subplots(figsize=(8.0, 5.5), constrained_layout=True)
    low, high = (float(step_values.min()), float(step_values.max())) if len(steps) else (0, 1)
    norm = plt.Normalize(low, high if high > low else low + 1.0)
    cmap = plt.get_cmap("viridis")
    for index, name in enumerate(layers):
        xs, ys = x_grid[:, index], y_grid[:, index]
        seen = np.isfinite(xs) & np.isfinite(ys)
        if not seen.any():
            continue
        marker = _TRAJECTORY_MARKERS[index % len(_TRAJECTORY_MARKERS)]
        ax.plot(xs[seen], ys[seen], color="0.6", linewidth=0.8, zorder=1)
        ax.scatter(xs[seen], ys[seen], c=step_values[seen], cmap=cmap, norm=norm, s=28,
                   marker=marker, edgecolors="0.2", linewidths=0.3, zorder=2)
        ax.scatter([], [], marker=marker, color="0.5",
                   label=f"{index}: {name}" if len(layers) <= _LEGEND_LAYERS else None)
        last = np.flatnonzero(seen)[-1]
        ax.annotate(str(index), (xs[last], ys[last]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    colorbar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
    colorbar.set_label("step")
    if h_y is not None:
        ax.axhline(h_y, color="tab:red", linestyle="--", linewidth=1,
                   label=f"H(Y) = {h_y:.3f} bits")
    name = f" ({estimator})" if estimator else ""
    if plane:
        if log2_n is not None:
            ax.axvline(log2_n, color="tab:blue", linestyle=":", linewidth=1,
                       label=f"log2(N) = {log2_n:.3f} bits")
        ax.set_xlabel("I(X;T) [bits]")
        ax.set_title(f"Information plane over training{name}; colour: step, markers: layers")
    else:
        ax.set_xlabel("step")
        ax.set_title(f"I(T;Y) over training{name}; I(X;T) is not defined for this estimator")
    ax.set_ylabel("I(T;Y) [bits]")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(fontsize=7, loc="outside right upper", frameon=False)
    return fig
