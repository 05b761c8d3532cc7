"""The ``mutual_information`` analysis: I(X;T) and I(T;Y) per layer, and the information plane.

``X`` is the sample identity (the analysed samples, each equiprobable), ``T``
a layer's captured activations and ``Y`` the class label. The estimators
live in :mod:`layerlens.analyses.mi_estimators`; this module selects layers,
calls them, draws the information plane and writes the report section::

    {"estimator", "units": "bits", "n_samples", "n_distinct_inputs", "H_X", "H_Y",
     "log2_N", "parameters": {"n_bins", "bin_range", "noise_variance", "k", "seed"},
     "layers": [{"layer", "I_XT", "I_TY", ...} | {"layer", "skipped"}],
     "image", "note", "complete"}

References
----------
Shwartz-Ziv, R. & Tishby, N. (2017). Opening the black box of deep neural
    networks via information. arXiv:1703.00810.
Saxe, A. M. et al. (2018). On the information bottleneck theory of deep
    learning. ICLR.
Chelombiev, I., Houghton, C. & O'Donnell, C. (2019). Adaptive estimators show
    information compression in deep neural networks. ICLR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from layerlens.analyses.base import AnalysisContext, skipped
from layerlens.analyses.mi_estimators import (
    binning_information,
    entropy_bits,
    kde_information,
    ksg_label_mi,
)
from layerlens.capture import LayerActivations
from layerlens.report.plots import plt
from layerlens.spec import MutualInformationSpec

#: Widest layer the KSG estimator is run on (nearest neighbours in high dimension are noise).
KSG_MAX_FEATURES = 32
KSG_K = 3
#: Relative jitter that breaks ties before KSG (as scikit-learn's ``mutual_info_classif``).
KSG_JITTER = 1e-10
#: Layers named in the figure's legend (beyond this, only their index is annotated).
_LEGEND_LAYERS = 16

_ESTIMATOR_NOTES = {
    "binning": ("Equal-width bins (Shwartz-Ziv & Tishby 2017): {n_bins} bins over {range}; "
                "each sample's vector of bin indices is one symbol, and the entropies are "
                "exact plug-in values over the samples."),
    "adaptive": ("Adaptive bins (Chelombiev et al. 2019): {n_bins} bins per layer with edges at "
                 "equal ranks of the layer's pooled values, so each bin holds about as many "
                 "values; tied values (e.g. ReLU zeros) share a bin. Exact plug-in entropies "
                 "over the binned vectors."),
    "kde": ("Pairwise-distance upper bound of Kolchinsky & Tracey (2017) with Gaussian noise "
            "added to T (Saxe et al. 2018); noise variance {noise}. I(T;Y) applies the same "
            "bound within each class."),
    "ksg": ("I(T;Y) by the KSG nearest-neighbour estimator for a discrete Y (Ross 2014), "
            "k = {k}, max-norm, ties broken by 1e-10 relative jitter; negative estimates "
            "(bias around 0) are reported as 0. I(X;T) is not estimated (null): X is the sample "
            "identity and T a deterministic function of it, so the continuous I(X;T) is "
            "infinite and a nearest-neighbour estimate of it has no meaning. Layers wider than "
            "{max_features} units are skipped."),
}


def _distinct_inputs(x: np.ndarray) -> tuple[int, float]:
    """Number of distinct input patterns and their plug-in entropy H(X) in bits."""
    rows = np.ascontiguousarray(x.reshape(len(x), -1))
    _, counts = np.unique(rows, axis=0, return_counts=True)
    return len(counts), entropy_bits(counts)


def _note(spec: MutualInformationSpec, n_distinct: int, h_x: float) -> str:
    saturation = (
        f"T is a deterministic function of the input, so I(X;T) = H(T) for a binned T and, on "
        f"N = {n_distinct} distinct inputs, it saturates at H(X) = {h_x:.4g} bits "
        f"(log2(N) when the inputs are equally frequent) as soon as the bins or the noise "
        f"separate every sample. The estimate measures how the estimator clusters the "
        f"activations (bin width, noise variance), not an absolute quantity of the network: "
        f"compare layers and models only under the same estimator and parameters.")
    bin_range = ("each layer's observed [min, max]" if spec.bin_range == "observed" else
                 f"the fixed range [{spec.bin_range[0]:g}, {spec.bin_range[1]:g}] (values "
                 "outside are clipped into the edge bins)")
    noise = (f"{spec.noise_variance:g}" if spec.noise_variance is not None else
             "0.1 x the layer's total variance (per layer, listed with each layer)")
    detail = _ESTIMATOR_NOTES[spec.estimator].format(
        n_bins=spec.n_bins, range=bin_range, noise=noise, k=KSG_K,
        max_features=KSG_MAX_FEATURES)
    if spec.estimator == "ksg":
        return detail
    return f"{saturation} {detail}"


def _binned_entries(spec: MutualInformationSpec, chosen: Sequence[LayerActivations],
                    y: np.ndarray, ctx: AnalysisContext) -> list[dict[str, Any]]:
    results = binning_information(
        [layer.values for layer in chosen], y, n_bins=spec.n_bins, bin_range=spec.bin_range,
        adaptive=spec.estimator == "adaptive", device=ctx.device, seed=spec.seed,
        progress=lambda step, total, metrics: ctx.report_progress(step, total, **metrics))
    return [{"layer": layer.info.name, "I_XT": r.i_xt, "I_TY": r.i_ty,
             "n_symbols": r.n_symbols, "n_features": int(layer.values.shape[1]),
             "bin_lo": r.bin_lo, "bin_hi": r.bin_hi, "distinct_edges": r.n_edges}
            for layer, r in zip(chosen, results, strict=False)]


def _layer_entry(spec: MutualInformationSpec, layer: LayerActivations, y: np.ndarray,
                 device: str) -> dict[str, Any]:
    name, width = layer.info.name, int(layer.values.shape[1])
    if not np.isfinite(layer.values).all():
        return skipped(name, "the layer's activations contain NaN or infinite values")
    if spec.estimator == "kde":
        result = kde_information(layer.values, y, noise_variance=spec.noise_variance,
                                 device=device)
        return {"layer": name, "I_XT": result.i_xt, "I_TY": result.i_ty,
                "noise_variance": result.noise_variance, "n_features": width}
    if width > KSG_MAX_FEATURES:
        return skipped(name, f"ksg is for low-dimensional layers (at most {KSG_MAX_FEATURES} "
                             f"units); this layer has {width} units")
    if len(y) <= KSG_K + 1:
        return skipped(name, f"ksg needs more than {KSG_K + 1} samples, got {len(y)}")
    nats = ksg_label_mi(layer.values, y, k=KSG_K, jitter=KSG_JITTER, seed=spec.seed,
                        device=device)
    return {"layer": name, "I_XT": None, "I_TY": max(nats, 0.0) / math.log(2.0),
            "I_TY_raw_nats": nats, "n_features": width}


def _per_layer_entries(spec: MutualInformationSpec, chosen: Sequence[LayerActivations],
                       y: np.ndarray, ctx: AnalysisContext) -> list[dict[str, Any]]:
    entries = []
    for step, layer in enumerate(chosen, start=1):
        entry = _layer_entry(spec, layer, y, ctx.device)
        entries.append(entry)
        metrics = {key: float(entry[key]) for key in ("I_XT", "I_TY")
                   if entry.get(key) is not None}
        if ctx.report_progress(step, len(chosen), **metrics):
            break
    return entries


def information_plane_figure(entries: Sequence[dict[str, Any]], *, h_y: float, h_x: float,
                             log2_n: float, estimator: str) -> Any:
    """The information plane: I(X;T) against I(T;Y), one marker per layer in forward order.

    Layers without I(X;T) (``ksg``) are drawn as I(T;Y) against depth instead.
    Skipped layers are left out; markers carry the layer's index in ``entries``.
    """
    points = [(i, e) for i, e in enumerate(entries) if e.get("I_TY") is not None]
    plane = any(e.get("I_XT") is not None for _, e in points)
    fig, ax = plt.subplots(figsize=(8.0, 5.5), constrained_layout=True)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(points), 1)))
    xs = [e["I_XT"] if plane else i for i, e in points]
    ys = [e["I_TY"] for _, e in points]
    ax.plot(xs, ys, color="0.75", linewidth=1, zorder=1)
    for (index, entry), x, y, color in zip(points, xs, ys, colors, strict=False):
        label = f"{index}: {entry['layer']}" if len(points) <= _LEGEND_LAYERS else None
        ax.scatter([x], [y], color=color, s=45, zorder=2, label=label)
        ax.annotate(str(index), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
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


def run(spec: MutualInformationSpec, ctx: AnalysisContext) -> dict[str, Any]:
    """The ``mutual_information`` report section for the selected layers (bits)."""
    chosen = ctx.layers(spec.layers)
    y = np.asarray(ctx.activations.y)
    n = len(y)
    n_distinct, h_x = _distinct_inputs(ctx.dataset.x[:n])
    h_y = entropy_bits(np.unique(y, return_counts=True)[1])
    if spec.estimator in ("binning", "adaptive"):
        finite = [layer for layer in chosen if np.isfinite(layer.values).all()]
        finite_names = {layer.info.name for layer in finite}
        done = {e["layer"]: e for e in _binned_entries(spec, finite, y, ctx)}
        entries: list[dict[str, Any]] = []
        for layer in chosen:
            if layer.info.name in done:
                entries.append(done[layer.info.name])
            elif layer.info.name in finite_names:
                break  # stopped by the progress callback
            else:
                entries.append(skipped(layer.info.name,
                                       "the layer's activations contain NaN or infinite values"))
    else:
        entries = _per_layer_entries(spec, chosen, y, ctx)
    log2_n = math.log2(n)
    figure = information_plane_figure(entries, h_y=h_y, h_x=h_x, log2_n=log2_n,
                                      estimator=spec.estimator)
    return {
        "estimator": spec.estimator,
        "units": "bits",
        "n_samples": n,
        "n_distinct_inputs": n_distinct,
        "H_X": h_x,
        "H_Y": h_y,
        "log2_N": log2_n,
        "parameters": {
            "n_bins": spec.n_bins,
            "bin_range": (spec.bin_range if spec.bin_range == "observed"
                          else [float(v) for v in spec.bin_range]),
            "noise_variance": spec.noise_variance,
            "k": KSG_K if spec.estimator == "ksg" else None,
            "seed": spec.seed,
        },
        "layers": entries,
        "image": ctx.artifacts.png(figure, "mutual_information", "information_plane"),
        "note": _note(spec, n_distinct, h_x),
        "complete": len(entries) == len(chosen),
    }
