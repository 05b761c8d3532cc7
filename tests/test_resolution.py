"""The float32 resolution rule, and the activations summary that uses it (dead_fraction)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from layerlens.analyze import analyze
from layerlens.capture import capture_activations
from layerlens.data import Dataset
from layerlens.models import load_model
from layerlens.options import JobOptions
from layerlens.resolution import RESOLUTION_ULPS, constant_at_resolution, resolution
from tests.nets import save_scripted

ULP_1 = 2.0**-23  # float32 spacing of values in [1, 2)


def test_resolution_is_a_fixed_number_of_float32_spacings():
    assert RESOLUTION_ULPS == 1024
    assert float(resolution(1.5)) == 1024 * ULP_1
    assert float(resolution(-3.0)) == 2048 * ULP_1
    assert 0 < float(resolution(0.0)) < 1e-40
    assert resolution(np.array([[1.0, 1e-6]])).shape == (1, 2)


def test_constant_at_resolution_boundary_and_nan():
    """Range 1024 spacings of 1.0: constant; 1025: not; a NaN extreme: not constant."""
    low = np.array([1.0, 1.0, 0.0, np.nan, -1e-30])
    high = np.array([1 + 1024 * ULP_1, 1 + 1025 * ULP_1, 0.0, 1.0, 1e-30])
    assert constant_at_resolution(low, high).tolist() == [True, False, True, False, False]


def test_dead_fraction_follows_the_resolution_rule(tmp_path):
    """Four units over x in [0, 1): 5e-8 x (narrow, informative: alive), 100 + 1e-9 x (exactly
    100 in float32: dead), 1 + 1e-5 x (84 spacings of 1: rounding-sized, dead), x (alive)."""
    net = nn.Linear(1, 4)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[5e-8], [1e-9], [1e-5], [1.0]]))
        net.bias.copy_(torch.tensor([0.0, 100.0, 1.0, 0.0]))
    model = load_model(save_scripted(nn.Sequential(net), tmp_path / "m.pt"), input_shape=(1,),
                       device="cpu")
    x = np.linspace(0, 1, 200, endpoint=False, dtype=np.float32)[:, None]
    acts = capture_activations(model, Dataset.from_arrays("ramp", x, np.arange(200) % 2))
    values = acts.layers["0"].values
    assert np.ptp(values[:, 0]) > 4e-8 and np.ptp(values[:, 1]) == 0
    assert 80 * ULP_1 < np.ptp(values[:, 2]) < 90 * ULP_1
    assert acts.layers["0"].stats.summary()["dead_fraction"] == 0.5


class _MeanOverVocab(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-1, keepdim=True)


class _PetalAndVocab(nn.Module):
    """iris -> "petal": 1e-7 x petal length (informative, in [1e-7, 7e-7]); and "pooled": the
    mean of a softmax over 2000 logits (1/2000 up to float32 rounding)."""

    def __init__(self) -> None:
        super().__init__()
        self.petal = nn.Linear(4, 1)
        self.logits, self.probs, self.pooled = nn.Linear(4, 2000), nn.Softmax(-1), _MeanOverVocab()
        with torch.no_grad():
            self.petal.weight.copy_(torch.tensor([[0.0, 0.0, 1e-7, 0.0]]))
            self.petal.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.petal(x) + self.pooled(self.probs(self.logits(x)))


def test_probe_and_projection_take_values_at_float32_resolution(tmp_path):
    """The probe reads the class from petal length scaled into [1e-7, 7e-7] (a std of 1.8e-7,
    far above its 6e-11 resolution: > 0.85 test accuracy, not the 1/3 of chance); the
    projection skips the rounding-only softmax mean and draws the petal layer."""
    torch.manual_seed(0)
    model = save_scripted(_PetalAndVocab(), tmp_path / "petal.pt")
    report = analyze(model, "builtin:iris", tmp_path / "out", JobOptions(
        input_shape=[4], analyses=[{"kind": "linear_probe"},
                                   {"kind": "projection", "method": "pca"}]))
    probe = {row["layer"]: row for row in report.analyses["linear_probe"]["layers"]}
    assert probe["petal"]["test_accuracy"] > 0.85
    projection = {row["layer"]: row for row in report.analyses["projection"]["layers"]}
    assert "float32 resolution" in projection["pooled"]["skipped"]
    assert projection["petal"]["neighborhood_hit"] > 0.85
