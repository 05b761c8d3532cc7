"""Batched capture over a dataset: statistics, memory reductions, progress."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist
from torch import nn

from layerlens.capture import capture_activations
from layerlens.data import Dataset
from layerlens.errors import InputError, ShapeMismatchError
from layerlens.models import LayerInfo, load_model
from layerlens.reduction import plan_reductions
from tests.nets import save_scripted


def _hand_built(tmp_path):
    """4 inputs -> Linear with known weights -> ReLU; units 2 and 3 can never fire."""
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(4))
        net[0].bias.copy_(torch.tensor([0.0, 0.0, -100.0, -100.0]))
    return load_model(save_scripted(net, tmp_path / "m.pt"), input_shape=(4,), device="cpu")


def test_statistics_of_a_hand_built_network(tmp_path):
    model = _hand_built(tmp_path)
    x = np.random.default_rng(0).uniform(-1, 1, (100, 4)).astype(np.float32)
    data = Dataset.from_arrays("hand", x, np.arange(100) % 2)
    acts = capture_activations(model, data, batch_size=7)
    relu = acts.layers["1"]
    expected = np.maximum(x * [1, 1, 0, 0], 0)  # units 2, 3 are always 0
    np.testing.assert_allclose(relu.values, expected, atol=1e-6)
    summary = relu.stats.summary()
    assert summary["dead_fraction"] == 0.5
    assert summary["mean"] == pytest.approx(expected.mean(), abs=1e-6)
    assert summary["std"] == pytest.approx(expected.std(), abs=1e-6)
    linear = acts.layers["0"].stats.summary()
    assert linear["dead_fraction"] == 0.0  # -100 + x varies with x
    assert acts.n_samples == 100 and acts.complete


def test_progress_can_stop_and_keeps_the_partial_result(tmp_path):
    model = _hand_built(tmp_path)
    data = Dataset.from_arrays("hand", np.ones((50, 4)), np.zeros(50))
    calls = []

    def progress(step, total, metrics):
        calls.append((step, total, metrics["samples"]))
        return step == 2

    acts = capture_activations(model, data, batch_size=10, progress=progress)
    assert calls == [(1, 5, 10.0), (2, 5, 20.0)]
    assert not acts.complete and acts.n_samples == 20
    assert acts.layers["1"].values.shape == (20, 4) and len(acts.y) == 20


def test_dataset_that_does_not_fit_the_model(tmp_path):
    model = _hand_built(tmp_path)
    data = Dataset.from_arrays("five", np.ones((3, 5)), np.zeros(3))
    with pytest.raises(ShapeMismatchError, match=r"\(4,\) \(4 values\)"):
        capture_activations(model, data)


LAYERS = [LayerInfo("conv", "Conv", (16, 32, 32)), LayerInfo("fc", "Gemm", (20000,)),
          LayerInfo("out", "Gemm", (10,))]


def test_plan_reduces_largest_layers_first_until_within_budget():
    n = 100
    full = n * (16 * 32 * 32 + 20000 + 10) * 4
    assert plan_reductions(LAYERS, n, memory_budget=full) == {}
    plan = plan_reductions(LAYERS, n, memory_budget=full - 1, max_features=1000)
    assert set(plan) == {"fc"} and plan["fc"].method == "random_projection"
    assert plan["fc"].to == 1000
    plan = plan_reductions(LAYERS, n, memory_budget=n * 2000 * 4, max_features=1000)
    assert plan["conv"].method == "spatial_mean" and plan["conv"].to == 16
    with pytest.raises(InputError, match="raise memory_budget"):
        plan_reductions(LAYERS, n, memory_budget=n * 100 * 4, max_features=1000)


def test_reductions_applied_during_capture(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 64, 300))
    model = load_model(save_scripted(net, tmp_path / "m.pt"), input_shape=(1, 8, 8),
                       device="cpu")
    x = np.random.default_rng(0).standard_normal((40, 1, 8, 8)).astype(np.float32)
    data = Dataset.from_arrays("random", x, np.arange(40) % 4)
    # the budget fits the conv's 3 channel means, nothing of the 192-wide flatten or 300-wide fc
    budget = 40 * (3 + 50 + 50) * 4
    acts = capture_activations(model, data, memory_budget=budget, max_features=50,
                               batch_size=16)
    conv, fc = acts.layers["0"], acts.layers["2"]
    assert conv.reduction.method == "spatial_mean" and conv.values.shape == (40, 3)
    with torch.no_grad():
        full_conv = net[0](torch.from_numpy(x)).numpy()
        full_fc = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(conv.values, full_conv.mean(axis=(2, 3)), atol=1e-5)
    assert fc.reduction.method == "random_projection" and fc.values.shape == (40, 50)
    # a random projection keeps pairwise distances roughly (Johnson-Lindenstrauss)
    ratio = pdist(fc.values) / pdist(full_fc)
    assert 0.5 < np.median(ratio) < 1.5
    # statistics are computed on the unreduced activations
    assert fc.stats.summary()["mean"] == pytest.approx(full_fc.mean(), abs=1e-5)
    again = capture_activations(model, data, memory_budget=budget, max_features=50)
    np.testing.assert_array_equal(again.layers["2"].values, fc.values)  # seeded


def test_a_batch_of_wide_layers_is_made_smaller_to_fit_the_budget():
    from layerlens.capture import fitting_batch_size
    from layerlens.models.base import LayerInfo

    wide = [LayerInfo("conv", "Conv", (64, 112, 112)), LayerInfo("fc", "Gemm", (1000,))]
    per_sample = 4 * (64 * 112 * 112 + 1000)
    assert fitting_batch_size(wide, 256, 2 * 1024**3) == 2 * 1024**3 // 8 // per_sample == 83
    assert fitting_batch_size(wide, 256, 1024) == 1  # never below one sample
    assert fitting_batch_size(wide[1:], 256, 2 * 1024**3) == 256  # small layers: as asked
