"""Gradient SNR: the closed form of a linear softmax model on fixed mini-batches (ONNX,
TorchScript, .pt2), the mini-batch draw, skipping (no gradients, output not logits), the
drift-to-diffusion transition of a series."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from app.demo.model import export_onnx, export_torchscript
from layerlens.analyses.base import AnalysisContext, ArtifactWriter
from layerlens.analyses.gradient_snr.figures import snr_over_epochs_figure, transition_step
from layerlens.analyses.gradient_snr.run import run
from layerlens.analyses.gradient_snr.science import draw_batches, gradient_moments
from layerlens.analyses.gradient_snr.spec import GradientSnrSpec
from layerlens.capture import capture_activations
from layerlens.data import Dataset, resolve_dataset
from layerlens.errors import InputError
from layerlens.models import load_model
from layerlens.report.plots import plt
from tests.models.test_onnx_and_torchscript import _unsupported_op_model

N_FEATURES, N_CLASSES, N_SAMPLES = 5, 3, 40


@pytest.fixture(autouse=True)
def _one_thread():
    """Small batches on a shared machine: a second intra-op thread only adds contention."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _context(model, data: Dataset, folder) -> AnalysisContext:
    folder.mkdir(parents=True, exist_ok=True)
    activations = capture_activations(model, data, layers=model.layers[-1:])
    return AnalysisContext(model, data, activations, ArtifactWriter(folder), device="cpu")


def _save(net: nn.Module, folder, fmt: str):
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        return export_onnx(net, folder / "m.onnx", (N_FEATURES,))
    if fmt == "pt2":
        program = torch.export.export(net, (torch.zeros(2, N_FEATURES),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, folder / "m.pt2")
        return folder / "m.pt2"
    return export_torchscript(net, folder / "m.pt")


def _closed_form(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray,
                 batches: np.ndarray) -> tuple[float, float]:
    """(snr, snr_norms) from the per-batch gradients of the mean cross-entropy of
    softmax(x W^T + b): dL/dW = (P - Y)^T x / B, dL/db = mean over rows of (P - Y)."""
    gradients = []
    for rows in batches:
        logits = x[rows] @ weight.T + bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        residual = p - np.eye(N_CLASSES)[y[rows]]
        gradients.append(np.concatenate([(residual.T @ x[rows]).ravel() / len(rows),
                                         residual.mean(axis=0)]))
    g = np.array(gradients)
    norms = np.linalg.norm(g, axis=1)
    return (np.linalg.norm(g.mean(axis=0)) / np.linalg.norm(g.std(axis=0)),
            norms.mean() / norms.std())


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_linear_softmax_model_matches_its_closed_form(tmp_path, fmt):
    """Both ratios of the one weighted layer equal the closed form to rtol 1e-6 (float32
    forward pass, float64 closed form on the same weights and mini-batches)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(N_FEATURES, N_CLASSES)).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 1.0, (N_SAMPLES, N_FEATURES)).astype(np.float32)
    y = np.arange(N_SAMPLES) % N_CLASSES
    data = Dataset.from_arrays("test:linear", x, y)
    model = load_model(_save(net, tmp_path / "model", fmt), input_shape=(N_FEATURES,),
                       device="cpu")
    spec = GradientSnrSpec(kind="gradient_snr", batch_size=8, n_batches=6, seed=3)
    section = run(spec, _context(model, data, tmp_path / "out"))
    (row,) = section.layers
    assert row.layer == "0" and row.n_weights == N_CLASSES * N_FEATURES + N_CLASSES
    assert section.complete and section.n_batches == 6 and section.skipped is None
    batches = draw_batches(N_SAMPLES, 8, 6, seed=3)
    snr, snr_norms = _closed_form(net[0].weight.detach().double().numpy(),
                                  net[0].bias.detach().double().numpy(), x.astype(np.float64),
                                  data.y, batches)
    assert row.snr == pytest.approx(snr, rel=1e-6)
    assert row.snr_norms == pytest.approx(snr_norms, rel=1e-6)
    assert (tmp_path / "out" / section.image).is_file()


def test_training_to_a_minimum_drops_the_snr_of_every_layer(tmp_path):
    """A 4-16-3 tanh MLP on standardised iris: at initialisation the mini-batches agree (SNR
    about 2.5); after 300 full-batch Adam steps the mean gradient nearly vanishes and the
    SNR of every layer falls more than tenfold (measured: about 30x); the norms' ratio falls
    too."""
    iris = resolve_dataset("builtin:iris")
    x = ((iris.x - iris.x.mean(axis=0)) / iris.x.std(axis=0)).astype(np.float32)
    data = Dataset.from_arrays("test:iris", x, iris.y)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
    spec = GradientSnrSpec(kind="gradient_snr", batch_size=16, n_batches=8)

    def rows(tag: str):
        path = export_torchscript(net.eval(), tmp_path / f"{tag}.pt")
        model = load_model(path, input_shape=(4,), device="cpu")
        return run(spec, _context(model, data, tmp_path / tag)).layers

    before = rows("untrained")
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(data.y)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(inputs), labels).backward()
        optimizer.step()
    after = rows("trained")
    assert [row.layer for row in after] == [row.layer for row in before] == ["0", "2"]
    for early, late in zip(before, after, strict=True):
        assert late.snr < early.snr / 10 and late.snr_norms < early.snr_norms


def test_a_mini_batch_run_in_chunks_has_the_same_gradient():
    """Chunks (memory) only split the sum: float64 weights, the ratios agree to rtol 1e-12."""
    rng = np.random.default_rng(4)
    weight = torch.from_numpy(rng.normal(size=(N_CLASSES, N_FEATURES)))
    x = torch.from_numpy(rng.normal(size=(24, N_FEATURES)))
    y = torch.from_numpy(np.arange(24) % N_CLASSES)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(batch @ weight.T, dim=1)

    def ratios(chunk: int) -> tuple:
        batches = ([(x[i:min(i + chunk, b + 8)], y[i:min(i + chunk, b + 8)])
                    for i in range(b, b + 8, chunk)] for b in (0, 8, 16))
        moments, unused = gradient_moments(forward, {"w": [weight]}, batches)
        assert unused == {} and moments["w"].count == 3
        return moments["w"].ratios()

    assert ratios(3) == pytest.approx(ratios(8), rel=1e-12)


def test_batches_are_seeded_and_never_repeat_a_sample_within_a_batch():
    first = draw_batches(10, 4, 5, seed=1)
    assert first.shape == (5, 4)
    assert np.array_equal(first, draw_batches(10, 4, 5, seed=1))
    assert not np.array_equal(first, draw_batches(10, 4, 5, seed=2))
    assert all(len(set(rows)) == 4 for rows in first)
    assert len(set(first[:2].ravel())) == 8  # a pass over the samples before any repeats
    with pytest.raises(InputError, match="batch_size"):
        draw_batches(3, 4, 2)


def test_a_model_without_gradients_skips_every_weighted_layer_with_the_reason(tmp_path):
    """Conv then Hardmax (no torch version): the output has 8 units, one per class."""
    path = tmp_path / "hardmax.onnx"
    _unsupported_op_model(path)
    model = load_model(path, device="cpu")
    data = Dataset.from_arrays("test:eight", np.random.default_rng(0).normal(
        size=(16, 1, 2, 2)).astype(np.float32), np.arange(16) % 8)
    section = run(GradientSnrSpec(kind="gradient_snr", batch_size=4, n_batches=2),
                  _context(model, data, tmp_path / "out"))
    assert section.skipped is None and section.image is None
    assert [(row.layer, "Hardmax" in row.skipped) for row in section.layers] == [("conv", True)]


def test_an_output_that_is_not_one_logit_per_class_is_skipped(tmp_path):
    net = nn.Sequential(nn.Linear(N_FEATURES, N_CLASSES + 1)).eval()
    model = load_model(_save(net, tmp_path / "model", "torchscript"), input_shape=(N_FEATURES,),
                       device="cpu")
    data = Dataset.from_arrays("test:linear", np.ones((12, N_FEATURES), np.float32),
                               np.arange(12) % N_CLASSES)
    section = run(GradientSnrSpec(kind="gradient_snr"), _context(model, data, tmp_path / "o"))
    assert section.layers == [] and "one output logit per class (3)" in section.skipped


def test_transition_is_the_first_step_after_the_peak_at_half_of_it():
    steps = [0, 10, 20, 30, 40]
    assert transition_step(steps, [1.0, 4.0, 3.0, 2.0, 1.0]) == 30  # 2.0 <= 0.5 * 4.0
    assert transition_step(steps, [1.0, 4.0, 3.0, None, 1.9]) == 40
    assert transition_step(steps, [1.0, 2.0, 3.0, 4.0, 5.0]) is None  # still rising
    assert transition_step(steps, [None] * 5) is None
    assert transition_step(steps, [8.0, 4.0, 1.0, 1.0, 1.0], fall=0.25) == 20


def test_snr_over_epochs_marks_each_layer_that_falls():
    figure = snr_over_epochs_figure([0, 1, 2], ["a", "b"], [[1.0, 1.0], [4.0, 1.5], [1.0, 2.0]])
    (ax,) = figure.axes
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(ax.lines) == 3 and [line.get_xdata()[0] for line in dashed] == [2]
    plt.close(figure)
