"""The mutual_information analysis: closed-form values, exactness against numpy, the report.

Tolerances are stated at each check. Binned values are exact plug-in entropies,
so they are compared to 1e-12 bits (float rounding of the entropy sums) and the
symbol counts exactly.
"""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.feature_selection._mutual_info import _compute_mi_cc, _compute_mi_cd
from torch import nn

import layerlens.analyses.mutual_information.estimators as mi
from layerlens.analyses.mutual_information.figures import information_plane_figure
from layerlens.analyses.mutual_information.spec import InformationLayer
from layerlens.analyze import analyze
from layerlens.data import Dataset, resolve_dataset
from layerlens.errors import InputError
from layerlens.options import JobOptions
from layerlens.report.plots import plt
from layerlens.spec import parse_spec

EXACT = 1e-12  # bits: float rounding of plug-in entropy sums


def _naive_entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _naive_binning(values: np.ndarray, y: np.ndarray, *, n_bins: int, bin_range="observed",
                   adaptive: bool = False) -> tuple[float, float, np.ndarray]:
    """Per-layer numpy reference: ``(I_XT, I_TY, sorted symbol counts)``."""
    values = values.astype(np.float32)
    if adaptive:
        pooled = np.sort(values.ravel())
        edges = pooled[np.arange(1, n_bins) * pooled.size // n_bins]
        bins = np.digitize(values, edges)
    else:
        lo, hi = (values.min(), values.max()) if bin_range == "observed" else bin_range
        lo, hi = np.float32(lo), np.float32(hi)
        scale = np.float32(n_bins / (float(hi) - float(lo))) if hi > lo else np.float32(0)
        bins = np.clip(np.floor((values - lo) * scale), 0, n_bins - 1).astype(np.int64)
    _, inverse, counts = np.unique(bins, axis=0, return_inverse=True, return_counts=True)
    joint = np.unique(np.stack([inverse.ravel(), y], axis=1), axis=0, return_counts=True)[1]
    h_t, h_y = _naive_entropy(counts), _naive_entropy(np.bincount(y))
    return h_t, h_t + h_y - _naive_entropy(joint), np.sort(counts)


def _layers(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Layers of several widths and kinds: ReLU with ties, tanh, wide, constant, one unit."""
    base = rng.standard_normal((n, 6)).astype(np.float32)
    return [
        np.maximum(base @ rng.standard_normal((6, 40)).astype(np.float32), 0),  # ReLU, many 0s
        np.tanh(base @ rng.standard_normal((6, 12)).astype(np.float32)),
        rng.standard_normal((n, 700)).astype(np.float32),
        np.full((n, 5), 0.25, dtype=np.float32),  # constant
        base[:, :1] * 3,  # one unit
    ]


# --------------------------------------------------------------------------- closed forms


def test_ib12_raw_inputs_through_analyze(tmp_path: Path) -> None:
    """T = X on the 12-bit set: I(X;T) = 12 bits, I(T;Y) = H(Y) = 0.99916 bits."""
    dataset = resolve_dataset("builtin:ib12")
    counts = np.bincount(dataset.y)
    assert counts.tolist() == [1978, 2118]
    p = counts / counts.sum()
    h_y = float(-(p * np.log2(p)).sum())
    assert h_y == pytest.approx(0.99916, abs=1e-5)
    model = tmp_path / "identity.pt"  # layers "0" (flatten) and "1" (relu) both equal x
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Flatten(), nn.ReLU())), str(model))
    report = analyze(model, dataset, tmp_path / "out", JobOptions(
        analyses=parse_spec([{"kind": "mutual_information", "estimator": "binning"}])))
    section = report.analyses["mutual_information"]
    assert [entry["layer"] for entry in section["layers"]] == ["0", "1"]
    for entry in section["layers"]:
        assert entry["I_XT"] == pytest.approx(12.0, abs=1e-9)
        assert entry["I_TY"] == pytest.approx(h_y, abs=1e-6)
        assert entry["n_symbols"] == 4096
        assert entry["saturated"]  # 12 bits = log2 N: every sample in its own bin
    assert section["H_Y"] == pytest.approx(h_y, abs=EXACT)
    assert section["units"] == "bits" and section["n_samples"] == 4096
    assert section["log2_N"] == pytest.approx(12.0, abs=EXACT)
    assert "saturates" in section["note"] and "log2(N)" in section["note"]
    assert section["parameters"]["n_bins"] == 30
    assert (tmp_path / "out" / section["image"]).stat().st_size > 0
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert 'id="mutual_information"' in html and section["image"] in html
    assert html.count("saturated</strong></td>") == 2  # the flag on each layer's row
    assert "layers are <strong>saturated</strong>" in html  # and what it means, above


@pytest.mark.parametrize("adaptive", [False, True])
def test_constant_layer_binned_is_zero(adaptive: bool, rng: np.random.Generator) -> None:
    y = rng.integers(0, 3, 200)
    (result,) = mi.binning_information([np.full((200, 7), -2.5)], y, adaptive=adaptive)
    assert result.i_xt == 0.0 and result.i_ty == 0.0 and result.n_symbols == 1


def test_constant_layer_kde_is_zero(rng: np.random.Generator) -> None:
    y = rng.integers(0, 3, 150)
    for noise in (None, 1e-3):
        result = mi.kde_information(np.full((150, 4), 7.0), y, noise_variance=noise)
        assert abs(result.i_xt) <= 1e-12 and abs(result.i_ty) <= 1e-12


def test_kde_well_separated_points_reach_log2_n() -> None:
    """Points 10*sqrt(2) apart with noise variance 0.1: every kernel but its own is exp(-1000)."""
    n = 64
    points = 10.0 * np.eye(n)
    y = np.arange(n) % 4
    result = mi.kde_information(points, y, noise_variance=0.1)
    assert result.i_xt == pytest.approx(math.log2(n), rel=1e-6)
    assert result.i_ty == pytest.approx(2.0, rel=1e-6)  # H(Y) of 4 balanced classes


def test_kde_matches_dense_formula_in_blocks(monkeypatch: pytest.MonkeyPatch,
                                             rng: np.random.Generator) -> None:
    """Row blocks of 3 (small pair budget) give the dense formula's values (rel 1e-9)."""
    t = rng.standard_normal((120, 5))
    y = rng.integers(0, 3, 120)
    monkeypatch.setattr(mi, "_PAIR_BLOCK", 360)
    result = mi.kde_information(t, y, noise_variance=0.5)
    d2 = ((t[:, None, :] - t[None, :, :]) ** 2).sum(-1)
    kernel = np.exp(-d2 / (2 * 0.5))
    h_t = -np.mean(np.log(kernel.mean(axis=1)))
    h_t_y = sum(np.mean(y == c) * -np.mean(np.log(kernel[np.ix_(y == c, y == c)].mean(axis=1)))
                for c in range(3))
    assert result.i_xt == pytest.approx(h_t / math.log(2), rel=1e-9)
    assert result.i_ty == pytest.approx((h_t - h_t_y) / math.log(2), rel=1e-9)
    assert result.noise_variance == 0.5


def test_kde_default_noise_is_scale_free(rng: np.random.Generator) -> None:
    t = rng.standard_normal((100, 3))
    y = rng.integers(0, 2, 100)
    small, large = mi.kde_information(t, y), mi.kde_information(1000.0 * t, y)
    assert small.noise_variance == pytest.approx(0.1 * t.var(axis=0).sum(), rel=1e-12)
    assert large.i_xt == pytest.approx(small.i_xt, rel=1e-9)
    assert 0.0 < small.i_xt < math.log2(100)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ksg_correlated_gaussians(rho: float) -> None:
    """N = 1000, k = 3, seeded: within 0.05 nats of -0.5 log(1 - rho^2)."""
    rng = np.random.default_rng(1)
    z = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=1000)
    estimate = mi.ksg_mi(z[:, 0], z[:, 1], k=3)
    assert abs(estimate - (-0.5 * math.log(1 - rho**2))) < 0.05
    # scikit-learn's implementation of the same estimator clips at 0: same value (1e-10 nats)
    assert max(estimate, 0.0) == pytest.approx(_compute_mi_cc(z[:, 0], z[:, 1], 3), abs=1e-10)


def test_ksg_label_mi_matches_scikit_learn(rng: np.random.Generator) -> None:
    """Ross (2014) estimator: same value as scikit-learn's 1-D implementation (1e-10 nats)."""
    t = rng.standard_normal(600)
    y = (t + rng.standard_normal(600) > 0).astype(int)
    y[2] = 3  # a class of a single sample, which is left out
    expected = _compute_mi_cd(t, y, 3)
    assert expected > 0.05
    assert mi.ksg_label_mi(t, y, k=3) == pytest.approx(expected, abs=1e-10)


def test_ksg_label_mi_small_class_uses_fewer_neighbours() -> None:
    """A class of two samples uses k_i = 1; hand-computed value (1e-12 nats).

    Points 0, 1 (class 0) and 10, 11.5, 13 (class 1), k = 3. Class 0: k_i = 1,
    d = 1, m = 1 (only the point itself is closer than d). Class 1: k_i = 2,
    d_10 = 3, d_11.5 = 1.5, d_13 = 3; m = 2, 1, 2 (self included).
    I = psi(5) + mean psi(k_i) - mean psi(n_y) - mean psi(m).
    """
    from scipy.special import digamma

    t = np.array([0.0, 1.0, 10.0, 11.5, 13.0])
    y = np.array([0, 0, 1, 1, 1])
    k_i, n_y, m = np.array([1, 1, 2, 2, 2]), np.array([2, 2, 3, 3, 3]), np.array([1, 1, 2, 1, 2])
    expected = digamma(5) + digamma(k_i).mean() - digamma(n_y).mean() - digamma(m).mean()
    assert mi.ksg_label_mi(t, y, k=3) == pytest.approx(expected, abs=1e-12)


def test_ksg_label_mi_of_separated_classes_is_h_y(rng: np.random.Generator) -> None:
    """Two classes far apart, 2-D: I(T;Y) -> H(Y) = log 2 nats (within 0.02)."""
    y = np.repeat([0, 1], 300)
    t = rng.standard_normal((600, 2)) + 100.0 * y[:, None]
    assert mi.ksg_label_mi(t, y, k=3) == pytest.approx(math.log(2), abs=0.02)


# --------------------------------------------------------------------------- binning


def test_fixed_range_clips_into_edge_bins() -> None:
    values = np.array([[-5.0], [-1.0], [-0.01], [0.0], [0.99], [1.0], [7.0]])
    bins = mi.equal_width_bins(values, n_bins=2, bin_range=(-1.0, 1.0))
    assert bins.ravel().tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_doubling_bins_splits_bins(rng: np.random.Generator) -> None:
    """Equal-width bins of 2n refine those of n exactly (observed range)."""
    values = rng.standard_normal((400, 3)).astype(np.float32) * 7 + 3
    for n_bins in (2, 4, 8, 16, 32, 64):
        coarse = mi.equal_width_bins(values, n_bins=n_bins)
        fine = mi.equal_width_bins(values, n_bins=2 * n_bins)
        assert np.array_equal(fine // 2, coarse)


@pytest.mark.parametrize("bin_range", ["observed", (-1.0, 1.0)])
def test_more_nested_bins_never_lower_the_estimate(bin_range, rng: np.random.Generator) -> None:
    """A narrow layer (values in [0, 0.01]): I(X;T) non-decreasing over 2, 4, ..., 4096 bins."""
    values = rng.uniform(0.0, 0.01, (300, 2)).astype(np.float32)
    y = rng.integers(0, 2, 300)
    estimates = [mi.binning_information([values], y, n_bins=n, bin_range=bin_range)[0].i_xt
                 for n in 2 ** np.arange(1, 13)]
    assert all(b >= a for a, b in pairwise(estimates))
    assert estimates[-1] > estimates[0] + 5  # more bins resolve more samples


def test_narrow_layer_in_a_fixed_range_is_one_symbol_until_bins_are_narrower(
        rng: np.random.Generator) -> None:
    """Range [-1, 1], values in [0, 0.01]: any n_bins <= 64 (width >= 0.031) gives 0 bits.

    The estimate measures the binning: the same activations give 0 bits at
    coarse bins and several bits at fine ones.
    """
    values = rng.uniform(0.0, 0.01, (300, 2)).astype(np.float32)
    y = rng.integers(0, 2, 300)
    for n_bins in range(2, 65):
        assert mi.binning_information([values], y, n_bins=n_bins,
                                      bin_range=(-1.0, 1.0))[0].i_xt == 0.0
    assert mi.binning_information([values], y, n_bins=1024, bin_range=(-1, 1))[0].i_xt > 3


def test_non_nested_bin_counts_can_lower_the_estimate(rng: np.random.Generator) -> None:
    """Monotonicity holds for nested bins only: going from n to n + 1 bins can lose bits."""
    values = rng.uniform(0.0, 0.01, (300, 2)).astype(np.float32)
    y = rng.integers(0, 2, 300)
    estimates = [r.i_xt for n in range(2, 65)
                 for r in mi.binning_information([values], y, n_bins=n)]
    assert any(b < a for a, b in pairwise(estimates))


@pytest.mark.parametrize("adaptive", [False, True])
def test_vectorised_equals_per_layer_numpy_loop(adaptive: bool,
                                                rng: np.random.Generator) -> None:
    """Same symbol counts (exact) and entropies (1e-12 bits) as numpy.unique per layer."""
    n = 1500
    layers = _layers(rng, n)
    y = rng.integers(0, 4, n)
    for n_bins in (3, 30):
        results = mi.binning_information(layers, y, n_bins=n_bins, adaptive=adaptive, seed=5)
        assert len(results) == len(layers)
        for values, result in zip(layers, results, strict=True):
            i_xt, i_ty, counts = _naive_binning(values, y, n_bins=n_bins, adaptive=adaptive)
            assert result.n_symbols == len(counts)
            assert abs(result.i_xt - i_xt) <= EXACT
            assert abs(result.i_ty - i_ty) <= EXACT


def test_vectorised_equals_numpy_with_fixed_range_and_float64_hash(
        rng: np.random.Generator) -> None:
    """A fixed range and a bin count that forces the float64 projections: still exact."""
    n = 400
    values = np.tanh(rng.standard_normal((n, 300)).astype(np.float32) * 2)
    y = rng.integers(0, 3, n)
    _, dtype = mi._hash_weights(300, 5000, torch.Generator().manual_seed(0))
    assert dtype == torch.float64
    (result,) = mi.binning_information([values], y, n_bins=5000, bin_range=(-0.5, 0.5))
    i_xt, i_ty, counts = _naive_binning(values, y, n_bins=5000, bin_range=(-0.5, 0.5))
    assert result.n_symbols == len(counts)
    assert abs(result.i_xt - i_xt) <= EXACT and abs(result.i_ty - i_ty) <= EXACT


def test_i_ty_of_identical_layers_bounded(rng: np.random.Generator) -> None:
    """I(T;Y) <= min(I(X;T), H(Y)) and >= 0 for random layers (exact plug-in bounds)."""
    y = rng.integers(0, 5, 800)
    h_y = mi.entropy_bits(np.bincount(y))
    for result in mi.binning_information(_layers(rng, 800), y, n_bins=4):
        assert 0.0 <= result.i_ty <= min(result.i_xt, h_y)


def test_progress_stops_after_the_first_layer(rng: np.random.Generator) -> None:
    calls = []

    def progress(step: int, total: int, metrics: dict[str, float]) -> bool:
        calls.append((step, total, sorted(metrics)))
        return True

    layers = _layers(rng, 100)
    results = mi.binning_information(layers, rng.integers(0, 2, 100), progress=progress)
    assert len(results) == 1
    assert calls == [(1, len(layers), ["I_TY", "I_XT"])]


def test_entropy_bits_closed_forms() -> None:
    assert mi.entropy_bits(np.ones(1024)) == pytest.approx(10.0, abs=EXACT)
    assert mi.entropy_bits(np.array([5, 0, 0])) == 0.0
    assert mi.entropy_bits(np.array([1, 1, 2])) == pytest.approx(1.5, abs=EXACT)


def test_invalid_parameters_name_the_key(rng: np.random.Generator) -> None:
    values, y = rng.standard_normal((20, 2)), rng.integers(0, 2, 20)
    with pytest.raises(InputError, match="n_bins"):
        mi.binning_information([values], y, n_bins=1)
    with pytest.raises(InputError, match="bin_range"):
        mi.binning_information([values], y, bin_range=(1.0, -1.0))
    with pytest.raises(InputError, match="noise_variance"):
        mi.kde_information(values, y, noise_variance=-1.0)
    with pytest.raises(InputError, match="k must"):
        mi.ksg_mi(values[:, 0], values[:, 1], k=20)
    with pytest.raises(InputError, match="NaN"):
        mi.binning_information([np.full((20, 2), np.nan)], y)
    with pytest.raises(InputError, match="y must"):
        mi.binning_information([values], y[:5])


# --------------------------------------------------------------------------- the report


@pytest.mark.slow
def test_analyze_cnn_binning_bounds(cnn_files, digits, tmp_path: Path) -> None:
    """Every layer: 0 <= I_TY <= H(Y), 0 <= I_XT <= log2 N (+1e-9), I_TY <= I_XT."""
    report = analyze(cnn_files["torchscript"], digits, tmp_path, JobOptions(
        analyses=parse_spec([{"kind": "mutual_information", "estimator": "binning"}])))
    section = json.loads((tmp_path / "report.json").read_text())["analyses"][
        "mutual_information"]
    n = digits.n_samples
    assert section["estimator"] == "binning" and section["n_samples"] == n
    assert section["parameters"]["n_bins"] == 30  # binning asked without n_bins: 30 bins
    h_y = section["H_Y"]
    assert h_y == pytest.approx(mi.entropy_bits(np.bincount(digits.y)), abs=EXACT)
    names = [layer.name for layer in report.model.layers]
    assert [entry["layer"] for entry in section["layers"]] == names
    for entry in section["layers"]:
        assert 0.0 <= entry["I_TY"] <= h_y + 1e-9
        assert 0.0 <= entry["I_XT"] <= math.log2(n) + 1e-9
        assert entry["I_TY"] <= entry["I_XT"]
    assert section["layers"][-1]["I_TY"] > 2.5  # the logits of a trained classifier separate
    assert (tmp_path / section["image"]).exists()


@pytest.mark.slow
def test_analyze_cnn_ksg_skips_wide_layers(cnn_files, digits, tmp_path: Path) -> None:
    analyze(cnn_files["onnx"], digits, tmp_path, JobOptions(
        analyses=parse_spec([{"kind": "mutual_information", "estimator": "ksg"}])))
    section = json.loads((tmp_path / "report.json").read_text())["analyses"][
        "mutual_information"]
    wide = [e for e in section["layers"] if "skipped" in e]
    run_on = [e for e in section["layers"] if "skipped" not in e]
    assert run_on and wide
    assert all("ksg is for low-dimensional layers" in e["skipped"] for e in wide)
    for entry in run_on:
        assert entry["n_features"] <= 32 and entry["I_XT"] is None
        assert 0.0 <= entry["I_TY"] <= section["H_Y"] + 1e-9
    assert run_on[-1]["I_TY"] > 1.5  # the 10 logits tell the digit
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "skipped: ksg is for low-dimensional layers" in html


# --------------------------------------------------------------------------- float32 resolution

ULP_1 = 2.0**-23  # float32 spacing of values in [1, 2)


def _softmax_mean(rng: np.random.Generator, n: int, vocab: int) -> np.ndarray:
    """What a mean over the wrong axis made of a softmax: 1/vocab up to float32 rounding, (n, 1)."""
    logits = torch.from_numpy(3 * rng.standard_normal((n, vocab)).astype(np.float32))
    return torch.softmax(logits, dim=1).mean(dim=1, keepdim=True).numpy()


def _identical_logits_softmax(rng: np.random.Generator, n: int, vocab: int) -> np.ndarray:
    """Softmax over ``vocab`` identical logits + 1e-9 noise (float64), stored as float32."""
    logits = torch.from_numpy(1e-9 * rng.standard_normal((n, vocab)))
    return torch.softmax(logits, dim=1).numpy().astype(np.float32)


def _constant_layers(rng: np.random.Generator, y: np.ndarray) -> dict[str, np.ndarray]:
    n = len(y)
    last_bit = np.where(y % 2 == 0, np.float32(0.3), np.nextafter(np.float32(0.3), np.float32(1)))
    return {
        "exactly constant": np.full((n, 3), -2.5, dtype=np.float32),
        "identical-logit softmax, vocab 6625": _identical_logits_softmax(rng, n, 6625),
        "softmax mean, vocab 20000": _softmax_mean(rng, n, 20000),
        "last float32 bit follows the class": last_bit[:, None].astype(np.float32),
    }


@pytest.mark.parametrize("adaptive", [False, True])
def test_a_layer_constant_at_float32_resolution_carries_zero_bits(
        adaptive: bool, rng: np.random.Generator) -> None:
    """I(X;T) = I(T;Y) = 0 bits (1e-12) and one symbol, for exact and rounding-only variation.

    The rounding-only layers do vary (checked), so without the resolution rule their
    observed-range bins would split the rounding noise: the softmax mean into many symbols
    (I(X;T) near log2 N), the last-bit layer into the two classes (I(T;Y) = H(Y)).
    """
    y = rng.integers(0, 4, 300)
    layers = _constant_layers(rng, y)
    assert np.ptp(layers["softmax mean, vocab 20000"]) > 0
    assert np.ptp(layers["last float32 bit follows the class"]) > 0
    for n_bins in (2, 30, 1000):
        results = mi.binning_information(list(layers.values()), y, n_bins=n_bins,
                                         adaptive=adaptive)
        for (name, values), result in zip(layers.items(), results, strict=True):
            assert abs(result.i_xt) <= EXACT and abs(result.i_ty) <= EXACT, name
            assert result.n_symbols == 1, name
            assert result.constant_units == values.shape[1], name


def test_kde_and_ksg_give_zero_on_layers_constant_at_float32_resolution(
        rng: np.random.Generator) -> None:
    """KDE (default noise: 0.1 x a variance of rounding noise) and KSG do not blow up: 0."""
    y = rng.integers(0, 4, 300)
    for name, values in _constant_layers(rng, y).items():
        result = mi.kde_information(values, y)
        assert result.i_xt == 0.0 and result.i_ty == 0.0, name
        assert result.constant_units == values.shape[1], name
        assert mi.ksg_label_mi(values[:, :4], y, jitter=1e-10) == 0.0, name


def _levels(n: int, top: float) -> tuple[np.ndarray, np.ndarray]:
    """One unit in [0, top]: 32 equally frequent levels m/32 x top, class = m // 8."""
    levels = np.arange(n) % 32
    return (levels * np.float32(top / 32)).astype(np.float32)[:, None], levels // 8


@pytest.mark.parametrize("adaptive", [False, True])
def test_an_informative_narrow_range_layer_keeps_its_information(adaptive: bool) -> None:
    """Values in [0, 1e-6], 1e7 times their float32 resolution: 4 bins give the class exactly,
    I(X;T) = I(T;Y) = H(Y) = 2 bits; 32 equal-width bins give each of the 32 levels, 5 bits."""
    values, y = _levels(32 * 20, 1e-6)
    assert float(mi.resolution(1e-6)) < 2e-10
    (four,) = mi.binning_information([values], y, n_bins=4, adaptive=adaptive)
    assert abs(four.i_xt - 2.0) <= EXACT and abs(four.i_ty - 2.0) <= EXACT
    assert four.constant_units == 0
    (fine,) = mi.binning_information([values], y, n_bins=32, adaptive=adaptive)
    assert abs(fine.i_xt - 5.0) <= EXACT and abs(fine.i_ty - 2.0) <= EXACT
    kde = mi.kde_information(values, y)
    assert kde.constant_units == 0 and kde.i_ty > 1.0


def _two_clusters(scale: float) -> tuple[np.ndarray, np.ndarray]:
    """One unit: 1 + k x scale for k in 0..200 and 2048..2248 (step 50); class = cluster."""
    k = np.array([0, 50, 100, 150, 200, 2048, 2098, 2148, 2198, 2248] * 40)
    return (1 + k * scale).astype(np.float32)[:, None], (k >= 2048).astype(int)


@pytest.mark.parametrize("adaptive", [False, True])
def test_no_bin_is_narrower_than_the_float32_resolution(adaptive: bool) -> None:
    """Clusters 2048 float32 spacings apart, each 200 spacings wide, resolution 1024 spacings.

    30 requested bins would be 75 spacings wide and split each cluster; bins of at least
    the resolution leave one bin per cluster: I(X;T) = I(T;Y) = 1 bit exactly, one inner
    edge. The same pattern spread 8192 times wider is resolved within the clusters.
    """
    values, y = _two_clusters(ULP_1)
    assert float(mi.resolution(values.max())) == 1024 * ULP_1
    (result,) = mi.binning_information([values], y, n_bins=30, adaptive=adaptive)
    assert abs(result.i_xt - 1.0) <= EXACT and abs(result.i_ty - 1.0) <= EXACT
    assert result.n_edges == 1 and result.constant_units == 0
    (wide,) = mi.binning_information([_two_clusters(8192 * ULP_1)[0]], y, n_bins=30,
                                     adaptive=adaptive)
    assert wide.i_xt > 2.0


@pytest.mark.parametrize("adaptive", [False, True])
def test_a_unit_constant_at_resolution_counts_as_exactly_constant(
        adaptive: bool, rng: np.random.Generator) -> None:
    """[informative unit, softmax-mean unit] gives the same bits (1e-12) and symbols as
    [informative unit, that unit's minimum everywhere]. Adaptive edges would otherwise fall
    inside the rounding noise of the second unit, which holds half the pooled values."""
    informative, y = _levels(32 * 10, 1.0)
    noisy = _softmax_mean(rng, len(y), 20000)
    assert np.ptp(noisy) > 0
    both = np.hstack([informative, noisy])
    exact = np.hstack([informative, np.full_like(noisy, noisy.min())])
    for n_bins in (4, 30):
        (pair,) = mi.binning_information([both], y, n_bins=n_bins, adaptive=adaptive)
        (reference,) = mi.binning_information([exact], y, n_bins=n_bins, adaptive=adaptive)
        assert abs(pair.i_xt - reference.i_xt) <= EXACT
        assert abs(pair.i_ty - reference.i_ty) <= EXACT
        assert pair.n_symbols == reference.n_symbols and pair.constant_units == 1
    kde_pair, kde_exact = mi.kde_information(both, y), mi.kde_information(exact, y)
    assert kde_pair.noise_variance == kde_exact.noise_variance
    assert abs(kde_pair.i_xt - kde_exact.i_xt) <= EXACT


class _VocabMean(nn.Module):
    """A mean over the vocabulary axis: what a reduction over the wrong axis computes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-1, keepdim=True)


class _VocabHeads(nn.Module):
    """iris -> tanh hidden layer -> softmax over 2000 entries -> its mean (1/2000 up to
    rounding); and a softmax over 2000 identical logits (exactly 1/2000)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.act = nn.Linear(4, 8), nn.Tanh()
        self.logits, self.probs, self.pooled = nn.Linear(8, 2000), nn.Softmax(dim=-1), _VocabMean()
        self.flat, self.uniform = nn.Linear(8, 2000), nn.Softmax(dim=-1)
        with torch.no_grad():
            self.flat.weight.zero_()
            self.flat.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.hidden(x))
        return self.pooled(self.probs(self.logits(h))) + self.uniform(self.flat(h))


@pytest.mark.parametrize("estimator", ["binning", "adaptive", "kde", "ksg"])
def test_constant_layers_are_flagged_in_the_report(estimator: str, tmp_path: Path) -> None:
    """The softmax mean and the uniform softmax read constant, 0 bits, dead_fraction 1.0."""
    torch.manual_seed(0)
    net = _VocabHeads().eval()
    x = torch.from_numpy(resolve_dataset("builtin:iris").x.astype(np.float32))
    with torch.no_grad():
        pooled = net.pooled(net.probs(net.logits(net.act(net.hidden(x))))).numpy()
    assert np.ptp(pooled) > 0  # rounding noise, a few float32 spacings of 1/2000
    model = tmp_path / "heads.pt"
    torch.jit.save(torch.jit.script(net), str(model))
    report = analyze(model, "builtin:iris", tmp_path / "out", JobOptions(
        input_shape=[4], analyses=parse_spec([{"kind": "mutual_information",
                                               "estimator": estimator}])))
    section = report.analyses["mutual_information"]
    rows = {row["layer"]: row for row in section["layers"]}
    for name in ("pooled", "uniform"):
        assert rows[name]["constant"] and rows[name]["constant_units"] == rows[name]["n_features"]
        assert rows[name]["I_TY"] == 0.0 and rows[name]["I_XT"] in (0.0, None)
        assert not rows[name]["saturated"]
    assert not rows["act"]["constant"] and rows["act"]["I_TY"] > 0.5
    assert "float32 resolution" in section["note"]
    dead = {layer.layer: layer.dead_fraction for layer in report.activations.layers}
    assert dead["pooled"] == dead["uniform"] == 1.0 and dead["act"] == 0.0
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "constant</strong> at float32 resolution" in html


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("adaptive", [False, True])
def test_float32_resolution_rule_is_the_same_on_cuda(adaptive: bool,
                                                     rng: np.random.Generator) -> None:
    """Same symbols (exact) and bits (1e-12) on CUDA as on the CPU for the resolution cases."""
    y = rng.integers(0, 4, 300)
    layers = list(_constant_layers(rng, y).values())
    clusters, cluster_y = _two_clusters(ULP_1)
    for values, labels in [*((v, y) for v in layers), (clusters, cluster_y)]:
        (cpu,) = mi.binning_information([values], labels, adaptive=adaptive)
        (cuda,) = mi.binning_information([values], labels, adaptive=adaptive, device="cuda")
        assert cuda.n_symbols == cpu.n_symbols and cuda.n_edges == cpu.n_edges
        assert abs(cuda.i_xt - cpu.i_xt) <= EXACT and abs(cuda.i_ty - cpu.i_ty) <= EXACT
        assert cuda.constant_units == cpu.constant_units


# --------------------------------------------------------------------------- the default


class _Columns(nn.Module):
    """Columns ``start:stop`` of the input: a layer whose values are known exactly."""

    def __init__(self, start: int, stop: int) -> None:
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.start:self.stop]


class _LabelAndNoise(nn.Module):
    """Layer ``label``: 3 x one-hot(y), a function of the label; ``noise``: 2-D standard
    Gaussian, independent of it."""

    def __init__(self) -> None:
        super().__init__()
        self.label, self.noise = _Columns(0, 4), _Columns(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.label(x), self.noise(x)], dim=1)


def test_default_estimator_on_a_label_layer_and_an_independent_layer(tmp_path: Path) -> None:
    """The default (kde, noise 0.1 x each layer's total variance) on known answers, n = 2000.

    ``label`` (4 classes, p = .4/.3/.2/.1): noise variance 0.1 x 3^2 x sum p(1-p) = 0.63,
    centroids 3 sqrt(2) apart, so cross-class kernels are exp(-18 / 1.26) < 1e-6 and
    I(X;T) = I(T;Y) = H(Y) to 1e-4 bits. ``noise`` (2-D N(0, I), sigma^2 = 0.2 per unit):
    I(T;Y) = 0 up to the estimator's finite-sample bias (its own kernel counts in the
    ~n/4 within-class sums: a few 1e-2 bits), tolerance 0.05 bits; I(X;T) is the
    large-n value of the Kolchinsky-Tracey bound for a Gaussian, per unit
    0.5 ln((1 + s) / s) + 1 / (2 (1 + s)) nats with s = sigma^2 / variance = 0.2,
    tolerance 0.05 bits (sampling of 2000 points).
    """
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1])
    x = np.concatenate([3.0 * np.eye(4)[y], rng.standard_normal((n, 2))], axis=1)
    data = Dataset.from_arrays("label-and-noise", x.astype(np.float32), y)
    model = tmp_path / "columns.pt"
    torch.jit.save(torch.jit.script(_LabelAndNoise()), str(model))
    report = analyze(model, data, tmp_path / "out", JobOptions(
        input_shape=[6], analyses=parse_spec([{"kind": "mutual_information"}])))
    section = report.analyses["mutual_information"]
    assert section["estimator"] == "kde" and "default estimator because" in section["note"]
    rows = {row["layer"]: row for row in section["layers"]}
    h_y = mi.entropy_bits(np.bincount(y))
    assert section["H_Y"] == pytest.approx(h_y, abs=EXACT)
    label, noise = rows["label"], rows["noise"]
    assert label["noise_variance"] == pytest.approx(0.63, rel=0.05)
    assert label["I_TY"] == pytest.approx(h_y, abs=1e-4)
    assert label["I_XT"] == pytest.approx(h_y, abs=1e-4)
    assert abs(noise["I_TY"]) <= 0.05
    s = 0.2
    gaussian = 2 * (0.5 * math.log((1 + s) / s) + 1 / (2 * (1 + s))) / math.log(2)
    assert noise["I_XT"] == pytest.approx(gaussian, abs=0.05)
    assert not label["saturated"] and not noise["saturated"]


@pytest.mark.slow
def test_default_information_plane_of_the_demo_cnn_separates_its_layers(
        cnn_files, digits, tmp_path: Path) -> None:
    """The demo CNN, default spec: at most half of the layers saturated, every row flagged,
    and the layers apart on the plane (I(X;T) spread over more than 1 bit; 30 equal-width
    bins put all 11 at log2 N = 10.81 bits)."""
    report = analyze(cnn_files["torchscript"], digits, tmp_path, JobOptions(
        analyses=parse_spec([{"kind": "mutual_information"}])))
    section = report.analyses["mutual_information"]
    rows = section["layers"]
    assert section["estimator"] == "kde" and len(rows) == 11
    assert all(isinstance(row["saturated"], bool) for row in rows)
    assert sum(row["saturated"] for row in rows) <= len(rows) / 2
    for row in rows:
        assert row["saturated"] == (row["I_XT"] >= 0.99 * section["log2_N"])
        assert 0.0 <= row["I_XT"] <= section["log2_N"] + 1e-9
        assert -0.05 <= row["I_TY"] <= section["H_Y"] + 1e-9
    spread = max(row["I_XT"] for row in rows) - min(row["I_XT"] for row in rows)
    assert spread > 1.0, [row["I_XT"] for row in rows]
    assert (tmp_path / section["image"]).stat().st_size > 0
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert html.count("saturated</strong></td>") == sum(row["saturated"] for row in rows)


@pytest.mark.parametrize("saturated", [False, True])
def test_information_plane_draws_saturated_layers_hollow(saturated: bool) -> None:
    """A saturated layer's marker has no fill (alpha 0) and the legend says what hollow means."""
    rows = [InformationLayer(layer="a", I_XT=2.0, I_TY=0.5, saturated=False, n_features=3),
            InformationLayer(layer="b", I_XT=9.99, I_TY=1.0, saturated=saturated,
                             n_features=3)]
    fig = information_plane_figure(rows, h_y=1.0, h_x=10.0, log2_n=10.0, estimator="kde")
    ax = fig.axes[0]
    fills = [c.get_facecolors() for c in ax.collections if len(c.get_offsets())]
    assert len(fills) == 2 and fills[0][0][3] == 1.0
    assert (fills[1][0][3] if len(fills[1]) else 0.0) == (0.0 if saturated else 1.0)
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any("hollow: saturated" in label for label in legend) == saturated
    plt.close(fig)
