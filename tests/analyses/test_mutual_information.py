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
from layerlens.analyze import analyze
from layerlens.data import resolve_dataset
from layerlens.errors import InputError
from layerlens.options import JobOptions
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
    assert section["H_Y"] == pytest.approx(h_y, abs=EXACT)
    assert section["units"] == "bits" and section["n_samples"] == 4096
    assert section["log2_N"] == pytest.approx(12.0, abs=EXACT)
    assert "saturates" in section["note"] and "log2(N)" in section["note"]
    assert section["parameters"]["n_bins"] == 30
    assert (tmp_path / "out" / section["image"]).stat().st_size > 0
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert 'id="mutual_information"' in html and section["image"] in html


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
        analyses=parse_spec([{"kind": "mutual_information"}])))
    section = json.loads((tmp_path / "report.json").read_text())["analyses"][
        "mutual_information"]
    n = digits.n_samples
    assert section["estimator"] == "binning" and section["n_samples"] == n
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
