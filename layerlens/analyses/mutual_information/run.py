"""The ``mutual_information`` analysis: I(X;T) and I(T;Y) per layer, and the information plane.

``X`` is the sample identity (the analysed samples, each equiprobable), ``T``
a layer's captured activations and ``Y`` the class label. The estimators
live in :mod:`layerlens.analyses.mutual_information.estimators`; this module selects layers,
calls them, draws the information plane and writes the report section::

    {"estimator", "units": "bits", "n_samples", "n_distinct_inputs", "H_X", "H_Y",
     "log2_N", "parameters": {"n_bins", "bin_range", "noise_variance", "k", "seed"},
     "layers": [{"layer", "I_XT", "I_TY", "saturated", ...} | {"layer", "skipped"}],
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

import numpy as np

from layerlens.activation_store import LayerValues
from layerlens.analyses.base import AnalysisContext, each_layer
from layerlens.analyses.mutual_information.estimators import (
    binning_information,
    constant_units,
    entropy_bits,
    kde_information,
    ksg_label_mi,
)
from layerlens.analyses.mutual_information.figures import information_plane_figure
from layerlens.analyses.mutual_information.spec import (
    InformationLayer,
    MutualInformationSection,
    MutualInformationSpec,
    Parameters,
)
from layerlens.analyses.sections import FailedLayer, SkippedLayer
from layerlens.capture import LayerActivations
from layerlens.resolution import RESOLUTION_ULPS

Row = InformationLayer | SkippedLayer | FailedLayer
NOT_FINITE = "the layer's activations contain NaN or infinite values"
#: Widest layer the KSG estimator is run on (nearest neighbours in high dimension are noise).
KSG_MAX_FEATURES = 32
KSG_K = 3
#: Relative jitter that breaks ties before KSG (as scikit-learn's ``mutual_info_classif``).
KSG_JITTER = 1e-10
#: A layer is saturated when I(X;T) is at least this share of log2 N.
SATURATION = 0.99
RESOLUTION_NOTE = (
    "Values are taken at float32 resolution: a unit whose range over the samples is within "
    f"{RESOLUTION_ULPS} float32 spacings of its magnitude (about 1e-4 of it) is rounding noise "
    "and counted as constant (constant_units), no bin is narrower than that resolution, and a "
    "layer whose every unit is constant carries 0 bits by construction and is marked "
    "constant: its zeros are not a measurement of the network.")

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
            "bound within each class. This is the default estimator because noise set to a "
            "fixed share of each layer's own variance looks at every layer at the same relative "
            "resolution, so the layers of a trained network separate on the plane, whereas "
            "bins of a fixed count (30 equal-width, or even a few adaptive ones) give each "
            "sample its own bin in the wide layers of a CNN and put every layer at log2 N."),
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
        return f"{detail} {RESOLUTION_NOTE}"
    return f"{saturation} {detail} {RESOLUTION_NOTE}"


def _binned_rows(spec: MutualInformationSpec, chosen: Sequence[LayerActivations],
                 y: np.ndarray, log2_n: float, ctx: AnalysisContext) -> list[Row]:
    """Every finite layer binned together; NaN layers skipped; stopped layers left out."""
    finite = [layer for layer in chosen if np.isfinite(layer.values).all()]
    results = binning_information(
        LayerValues(finite), y, n_bins=spec.n_bins, bin_range=spec.bin_range,
        adaptive=spec.estimator == "adaptive", device=ctx.device, seed=spec.seed,
        progress=lambda step, total, metrics: ctx.report_progress(step, total, **metrics))
    done = {layer.info.name: InformationLayer(
                layer=layer.info.name, I_XT=r.i_xt, I_TY=r.i_ty,
                saturated=r.i_xt >= SATURATION * log2_n, n_symbols=r.n_symbols,
                n_features=int(layer.values.shape[1]), bin_lo=r.bin_lo, bin_hi=r.bin_hi,
                distinct_edges=r.n_edges, constant_units=r.constant_units,
                constant=r.constant_units == layer.values.shape[1])
            for layer, r in zip(finite, results, strict=False)}
    rows: list[Row] = []
    for layer in chosen:
        if layer.info.name in done:
            rows.append(done[layer.info.name])
        elif np.isfinite(layer.values).all():
            break  # stopped by the progress callback
        else:
            rows.append(SkippedLayer(layer=layer.info.name, skipped=NOT_FINITE))
    return rows


def _layer_row(spec: MutualInformationSpec, layer: LayerActivations, y: np.ndarray,
               log2_n: float, device: str) -> InformationLayer | SkippedLayer:
    name, width = layer.info.name, int(layer.values.shape[1])
    if not np.isfinite(layer.values).all():
        return SkippedLayer(layer=name, skipped=NOT_FINITE)
    if spec.estimator == "kde":
        result = kde_information(layer.values, y, noise_variance=spec.noise_variance,
                                 device=device)
        return InformationLayer(layer=name, I_XT=result.i_xt, I_TY=result.i_ty,
                                saturated=result.i_xt >= SATURATION * log2_n,
                                noise_variance=result.noise_variance, n_features=width,
                                constant_units=result.constant_units,
                                constant=result.constant_units == width)
    constant = int(constant_units(layer.values).sum())
    if constant == width:
        return InformationLayer(layer=name, I_XT=None, I_TY=0.0, saturated=False,
                                I_TY_raw_nats=0.0, n_features=width, constant_units=constant,
                                constant=True)
    if width > KSG_MAX_FEATURES:
        return SkippedLayer(layer=name, skipped=(
            f"ksg is for low-dimensional layers (at most {KSG_MAX_FEATURES} units); this "
            f"layer has {width} units"))
    if len(y) <= KSG_K + 1:
        return SkippedLayer(layer=name,
                            skipped=f"ksg needs more than {KSG_K + 1} samples, got {len(y)}")
    nats = ksg_label_mi(layer.values, y, k=KSG_K, jitter=KSG_JITTER, seed=spec.seed,
                        device=device)
    return InformationLayer(layer=name, I_XT=None, I_TY=max(nats, 0.0) / math.log(2.0),
                            saturated=False, I_TY_raw_nats=nats, n_features=width,
                            constant_units=constant)


def _metrics(row: InformationLayer | SkippedLayer) -> dict[str, float]:
    if not isinstance(row, InformationLayer):
        return {}
    return {key: value for key, value in (("I_XT", row.I_XT), ("I_TY", row.I_TY))
            if value is not None}


def run(spec: MutualInformationSpec, ctx: AnalysisContext) -> MutualInformationSection:
    """The ``analyses.mutual_information`` report section (bits)."""
    chosen = ctx.layers(spec.layers)
    y = np.asarray(ctx.activations.y)
    n = len(y)
    n_distinct, h_x = _distinct_inputs(ctx.dataset.x[:n])
    h_y = entropy_bits(np.unique(y, return_counts=True)[1])
    log2_n = math.log2(n)
    if spec.estimator in ("binning", "adaptive"):
        rows = _binned_rows(spec, chosen, y, log2_n, ctx)
    else:
        rows = each_layer(ctx, chosen, lambda layer: _layer_row(spec, layer, y, log2_n,
                                                                 ctx.device), _metrics)
    figure = information_plane_figure(rows, h_y=h_y, h_x=h_x, log2_n=log2_n,
                                      estimator=spec.estimator)
    return MutualInformationSection(
        estimator=spec.estimator, units="bits", n_samples=n, n_distinct_inputs=n_distinct,
        H_X=h_x, H_Y=h_y, log2_N=log2_n,
        parameters=Parameters(
            n_bins=spec.n_bins,
            bin_range=(spec.bin_range if spec.bin_range == "observed"
                       else [float(v) for v in spec.bin_range]),
            noise_variance=spec.noise_variance,
            k=KSG_K if spec.estimator == "ksg" else None, seed=spec.seed),
        layers=rows,
        image=ctx.artifacts.png(figure, "mutual_information", "information_plane"),
        note=_note(spec, n_distinct, h_x), complete=len(rows) == len(chosen))
