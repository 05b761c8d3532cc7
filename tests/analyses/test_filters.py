"""First-layer filters: a 1-D bank of known sinusoids peaks at their frequencies, a 2-D bank
of oriented gratings along their orientation (through the model adapters), skipping a model
without a convolution, the series figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from app.demo.model import export_onnx, export_torchscript
from layerlens.analyses.base import AnalysisContext, ArtifactWriter
from layerlens.analyses.filters.figures import afr_over_epochs_figure
from layerlens.analyses.filters.run import run
from layerlens.analyses.filters.science import afr_1d, response_2d
from layerlens.analyses.filters.spec import FiltersSpec
from layerlens.capture import capture_activations
from layerlens.data import Dataset
from layerlens.models import load_model
from layerlens.report.plots import plt

F1, F2, TAPS = 0.1, 0.3, 64  # cycles/sample; taps of each 1-D filter


def _section(net: nn.Module, shape: tuple[int, ...], fmt: str, tmp_path, **keys):
    net = net.eval()
    path = (export_onnx(net, tmp_path / "m.onnx", shape) if fmt == "onnx"
            else export_torchscript(net, tmp_path / "m.pt"))
    model = load_model(path, input_shape=shape, device="cpu")
    x = np.random.default_rng(0).normal(size=(4, *shape)).astype(np.float32)
    data = Dataset.from_arrays("test:x", x, np.arange(4) % 2)
    out = tmp_path / "out"
    out.mkdir()
    ctx = AnalysisContext(model, data, capture_activations(model, data), ArtifactWriter(out))
    return run(FiltersSpec(kind="filters", **keys), ctx), out


def _local_peaks(values: np.ndarray) -> np.ndarray:
    inner = (values[1:-1] > values[:-2]) & (values[1:-1] > values[2:])
    return np.flatnonzero(inner) + 1


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_afr_of_sinusoid_filters_peaks_at_their_frequencies(tmp_path, fmt):
    """Three filters at F1, three at F2 (random phases, two input channels): the AFR's two
    largest local maxima lie within one grid step (1 / n_fft) of F1 and F2."""
    conv = nn.Conv1d(2, 6, TAPS)
    t = np.arange(TAPS)
    phases = np.random.default_rng(1).uniform(0, 2 * np.pi, (6, 2, 1))
    frequencies = np.array([F1] * 3 + [F2] * 3).reshape(6, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.cos(2 * np.pi * frequencies * t + phases)))
    section, out = _section(nn.Sequential(conv, nn.Flatten()), (2, 100), fmt, tmp_path)
    assert section.layer == "0" and section.dimensions == 1 and section.skipped is None
    assert (section.n_filters, section.in_channels, section.kernel) == (6, 2, [TAPS])
    grid, afr = np.array(section.frequencies), np.array(section.afr)
    assert grid[0] == 0.0 and grid[-1] == 0.5 and len(grid) == 256 // 2 + 1
    peaks = _local_peaks(afr)
    top = np.sort(grid[peaks[np.argsort(afr[peaks])[-2:]]])
    assert np.abs(top - [F1, F2]).max() <= 1 / 256
    assert (out / section.filters_image).is_file() and (out / section.response_image).is_file()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_oriented_gratings_peak_along_their_orientation(tmp_path, fmt):
    """Eight 9x9 gratings cos(2 pi f (x cos a + y sin a)), a = 60 degrees, f = 0.25: the
    orientation profile peaks at 60 (bins of 5 degrees), the radial AFR at 0.25 (within a
    grid step of 1/64)."""
    angle, f, k = np.radians(60.0), 0.25, 9
    y, x = np.mgrid[0:k, 0:k]
    phases = np.random.default_rng(2).uniform(0, 2 * np.pi, 8).reshape(8, 1, 1, 1)
    gratings = np.cos(2 * np.pi * f * (x * np.cos(angle) + y * np.sin(angle)) + phases)
    conv = nn.Conv2d(1, 8, k)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(gratings))
    section, out = _section(nn.Sequential(conv, nn.Flatten()), (1, 12, 12), fmt, tmp_path)
    assert section.dimensions == 2 and section.n_fft == 64 and section.kernel == [k, k]
    profile = np.array(section.orientation_profile)
    assert section.orientations[int(np.argmax(profile))] == 60.0
    assert abs(section.frequencies[int(np.argmax(section.afr))] - f) <= 1 / 64
    assert (out / section.filters_image).is_file()


def test_a_model_without_a_convolution_is_skipped_with_the_reason(tmp_path):
    section, _ = _section(nn.Sequential(nn.Linear(5, 3), nn.ReLU()), (5,), "torchscript",
                          tmp_path)
    assert section.afr == [] and section.filters_image is None
    assert section.skipped.startswith("the first weighted layer '0' (Linear) is not a conv")


def test_a_single_tap_and_a_bank_agree_with_their_closed_forms():
    """A unit impulse has |H| = 1 everywhere; a 2-tap [1, 1] has |H(f)| = 2 |cos(pi f)|."""
    grid, afr = afr_1d(np.array([[[1.0]]]), n_fft=16)
    assert np.allclose(afr, 1.0) and np.allclose(grid, np.arange(9) / 16)
    grid, afr = afr_1d(np.array([[[1.0, 1.0]]]), n_fft=16)
    assert np.allclose(afr, 2 * np.abs(np.cos(np.pi * grid)), atol=1e-12)
    impulse = response_2d(np.ones((1, 1, 1, 1)), n_fft=8)
    assert np.allclose(impulse.spectrum, 1.0) and np.allclose(impulse.radial, 1.0)


def test_afr_over_epochs_draws_one_curve_per_step():
    figure = afr_over_epochs_figure([0, 5, 10], [0.0, 0.25, 0.5],
                                    [[1.0, 2.0, 1.0], [1.0, 3.0, 1.0], [1.0, 4.0, 0.5]])
    assert len(figure.axes[0].lines) == 3
    plt.close(figure)
