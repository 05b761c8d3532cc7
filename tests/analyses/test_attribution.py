"""Attribution: closed forms on linear models, completeness of integrated gradients on the digits
CNN (ONNX and TorchScript), skipping without gradients, seeded example choice, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from app.demo.model import DIGITS_SHAPE, export_onnx, export_torchscript
from layerlens.analyses.attribution.figures import example_figure
from layerlens.analyses.attribution.run import run
from layerlens.analyses.attribution.science import attribute, pick_examples
from layerlens.analyses.attribution.spec import AttributionSpec
from layerlens.analyses.base import AnalysisContext, ArtifactWriter
from layerlens.analyze import analyze
from layerlens.capture import capture_activations
from layerlens.data import Dataset
from layerlens.errors import InputError
from layerlens.models import load_model
from layerlens.models.base import InputSpec
from layerlens.options import JobOptions
from layerlens.report.plots import plt
from layerlens.spec import parse_spec
from tests.models.test_onnx_and_torchscript import _unsupported_op_model

N_FEATURES, N_CLASSES = 5, 3


@pytest.fixture(autouse=True)
def _one_thread():
    """Small batches on a shared 2-core machine: a second intra-op thread only adds contention."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _spec(**keys) -> AttributionSpec:
    return AttributionSpec(kind="attribution", **keys)


def _context(model, data: Dataset, folder) -> AnalysisContext:
    folder.mkdir(parents=True, exist_ok=True)
    activations = capture_activations(model, data, layers=model.layers[-1:])
    return AnalysisContext(model, data, activations, ArtifactWriter(folder), device="cpu")


def _save(net: nn.Module, folder, fmt: str, shape: tuple[int, ...]):
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        return export_onnx(net.eval(), folder / "m.onnx", shape)
    return export_torchscript(net.eval(), folder / "m.pt")


@pytest.fixture(scope="module")
def linear():
    """A seeded Linear(5, 3) (layer "0"), its weights (3, 5) and bias (3,) as float64, and 30
    samples of 3 classes (10 each) whose features are far from zero."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(N_FEATURES, N_CLASSES))
    x = np.random.default_rng(0).normal(2.0, 1.5, (30, N_FEATURES)).astype(np.float32)
    data = Dataset.from_arrays("test:linear", x, np.arange(30) % N_CLASSES)
    return (net, net[0].weight.detach().double().numpy(),
            net[0].bias.detach().double().numpy(), data)


def _linear_run(linear, tmp_path, fmt, **keys) -> tuple[dict, np.ndarray, np.ndarray]:
    """The section, the attributions (n, 5) read back from their arrays, and the samples."""
    net, _, _, data = linear
    model = load_model(_save(net, tmp_path / "model", fmt, (N_FEATURES,)),
                       input_shape=(N_FEATURES,), device="cpu")
    section = run(_spec(**keys), _context(model, data, tmp_path / "out")).model_dump(mode="json")
    examples = section["examples"]
    arrays = np.stack([np.load(tmp_path / "out" / e["array"]) for e in examples])
    return section, arrays.astype(np.float64), data.x[[e["index"] for e in examples]]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_gradient_of_a_linear_model_is_the_target_row_of_its_weights(linear, tmp_path, fmt):
    """dF_t/dx = W[t] exactly: rtol 1e-6 (the arrays are float32)."""
    _, weights, bias, _ = linear
    section, arrays, x = _linear_run(linear, tmp_path, fmt, method="gradient")
    targets = [e["target"] for e in section["examples"]]
    np.testing.assert_array_equal(targets, np.argmax(x @ weights.T + bias, axis=1))
    np.testing.assert_allclose(arrays, weights[targets], rtol=1e-6)
    assert section["steps"] is None and section["baseline"] is None
    assert all(e["completeness_error"] is None for e in section["examples"])


def test_gradient_x_input_of_a_linear_model_is_weights_times_input(linear, tmp_path):
    """x * W[t]: rtol 1e-6."""
    _, weights, _, _ = linear
    section, arrays, x = _linear_run(linear, tmp_path, "torchscript", method="input_x_gradient")
    targets = [e["target"] for e in section["examples"]]
    np.testing.assert_allclose(arrays, weights[targets] * x, rtol=1e-6)


@pytest.mark.parametrize("steps", [1, 3, 64])
def test_integrated_gradients_of_a_linear_model_from_zeros_is_weights_times_input(
        linear, tmp_path, steps):
    """A constant gradient makes every quadrature exact: W[t] * x for any steps (rtol 1e-6),
    and the attributions sum to F(x) - F(0) = W[t] . x (completeness error below 1e-6)."""
    _, weights, bias, _ = linear
    section, arrays, x = _linear_run(linear, tmp_path, "torchscript", steps=steps)
    targets = [e["target"] for e in section["examples"]]
    np.testing.assert_allclose(arrays, weights[targets] * x, rtol=1e-6)
    for example, row, t in zip(section["examples"], x, targets, strict=True):
        assert example["baseline_output"] == pytest.approx(bias[t], rel=1e-6)
        assert example["output"] == pytest.approx(weights[t] @ row + bias[t], rel=1e-6)
        assert example["completeness_error"] < 1e-6
    assert section["steps"] == steps and section["rule"] == "gauss_legendre"


def test_mean_baseline_and_normalisation_give_the_closed_forms(linear, tmp_path):
    """Inputs normalised as (x - 1) / 4 before Linear: the gradient in data units is W[t] / 4
    and integrated gradients from the samples' mean are W[t] * (x - mean) / 4 (rtol 1e-6)."""
    net, weights, _, data = linear
    model = load_model(_save(net, tmp_path / "model", "torchscript", (N_FEATURES,)),
                       input_shape=(N_FEATURES,), mean=[1.0], std=[4.0], device="cpu")
    ctx = _context(model, data, tmp_path / "out")
    for method, expected in (("gradient", lambda t, x: weights[t] / 4),
                             ("integrated_gradients",
                              lambda t, x: weights[t] * (x - data.x.mean(axis=0)) / 4)):
        section = run(_spec(method=method, baseline="mean"), ctx)
        for example in section.examples:
            got = np.load(tmp_path / "out" / example.array)
            np.testing.assert_allclose(got, expected(example.target, data.x[example.index]),
                                       rtol=1e-6, atol=1e-7)


def test_layers_picks_the_attributed_layer_and_target_label_the_label(tmp_path, linear):
    """A softmax after the Linear: ``layers: ["0"]`` attributes the logits (gradient W[label])."""
    net, weights, _, data = linear
    model = load_model(_save(nn.Sequential(net[0], nn.Softmax(dim=1)), tmp_path / "m",
                             "torchscript", (N_FEATURES,)),
                       input_shape=(N_FEATURES,), device="cpu")
    ctx = _context(model, data, tmp_path / "out")
    assert run(_spec(), ctx).layer == "1"
    section = run(_spec(layers=["0"], method="gradient", target="label"), ctx)
    assert section.layer == "0"
    for example in section.examples:
        assert example.target == data.y[example.index]
        assert example.label == example.target_label == data.class_names[example.target]
        np.testing.assert_allclose(np.load(tmp_path / "out" / example.array),
                                   weights[example.target], rtol=1e-6)


def test_target_label_needs_one_output_unit_per_class(tmp_path):
    torch.manual_seed(0)
    model = load_model(_save(nn.Sequential(nn.Linear(4, 5)), tmp_path, "torchscript", (4,)),
                       input_shape=(4,), device="cpu")
    x = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    ctx = _context(model, Dataset.from_arrays("test:two", x, np.arange(12) % 2), tmp_path)
    with pytest.raises(InputError, match=r"target 'label' needs one output unit per class \(2\)"):
        run(_spec(target="label"), ctx)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_integrated_gradients_are_complete_within_1_percent_on_the_digits_cnn(
        fmt, cnn_files, digits, tmp_path):
    """64 Gauss-Legendre points from zeros on the trained digits CNN: every example's
    attributions sum to F(x) - F(0) within 1% (the ReLU network's gradient jumps along the
    path, so no quadrature is exact; measured at most 0.2%); the saved arrays say the same."""
    model = load_model(cnn_files[fmt], input_shape=DIGITS_SHAPE, device="cpu")
    section = run(_spec(steps=64), _context(model, digits, tmp_path))
    assert section.complete and section.skipped is None and len(section.examples) == 20
    assert section.max_completeness_error is not None and section.max_completeness_error < 0.01
    for example in section.examples:
        total = float(np.load(tmp_path / example.array).astype(np.float64).sum())
        difference = example.output - example.baseline_output
        assert abs(total - difference) <= 0.01 * abs(difference)
        assert example.target == example.predicted
    assert (tmp_path / section.grid).is_file()


def test_batches_of_any_size_give_the_same_attributions(cnn_files):
    """Paths split over batches of 7 rows (an example's 64 points over 10 batches) or all
    four examples in one batch: the same attributions (float32 passes, atol 1e-6 of the peak);
    stopping after the first group keeps only the examples whose paths are complete."""
    model = load_model(cnn_files["torchscript"], input_shape=DIGITS_SHAPE, device="cpu")
    x = np.random.default_rng(0).uniform(0, 16, (4, *DIGITS_SHAPE)).astype(np.float32)
    targets = np.array([0, 3, 5, 9])

    def forward(batch):
        return model.capture_torch(batch, ["10"])["10"]

    small = attribute(forward, x, targets, steps=64, max_rows=7)
    large = attribute(forward, x, targets, steps=64, max_rows=4 * 64)
    peak = np.abs(large.attributions).max()
    np.testing.assert_allclose(small.attributions, large.attributions, rtol=0, atol=1e-6 * peak)
    np.testing.assert_allclose(small.outputs, large.outputs, rtol=1e-5)
    calls = []
    stopped = attribute(forward, x, targets, steps=64, max_rows=2 * 64,
                        progress=lambda done, total: calls.append((done, total)) or True)
    assert calls == [(1, 2)] and stopped.stopped and len(stopped.attributions) == 2
    np.testing.assert_allclose(stopped.attributions, large.attributions[:2], atol=1e-6 * peak)


def test_a_model_without_gradients_is_skipped_with_the_reason(tmp_path):
    path = tmp_path / "hardmax.onnx"
    _unsupported_op_model(path)
    model = load_model(path, device="cpu")
    x = np.random.default_rng(0).uniform(-1, 1, (16, 1, 2, 2)).astype(np.float32)
    ctx = _context(model, Dataset.from_arrays("test:hardmax", x, np.arange(16) % 2), tmp_path)
    section = run(_spec(), ctx)
    assert "Hardmax" in section.skipped and section.examples == [] and section.grid is None


def test_a_discrete_input_is_skipped(linear, tmp_path):
    net, _, _, data = linear
    model = load_model(_save(net, tmp_path, "torchscript", (N_FEATURES,)),
                       input_shape=(N_FEATURES,), device="cpu")
    ctx = _context(model, data, tmp_path)
    model.input_spec = InputSpec((N_FEATURES,), "int64")
    section = run(_spec(), ctx)
    assert "discrete input (int64)" in section.skipped and section.examples == []


def test_examples_per_class_are_drawn_seeded(linear, tmp_path):
    labels = np.array([0] * 10 + [1] * 2 + [2] * 7)
    picked = pick_examples(labels, 3, seed=4)
    np.testing.assert_array_equal(labels[picked], [0, 0, 0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(picked, pick_examples(labels, 3, seed=4))
    draws = {tuple(pick_examples(labels, 3, seed=s)) for s in range(5)}
    assert len(draws) > 1  # the seed matters
    with pytest.raises(InputError, match="examples_per_class"):
        pick_examples(labels, 0)
    many = np.repeat(np.arange(100), 3)  # 100 classes: a seeded draw of 32 // 2 = 16 of them
    limited = pick_examples(many, 2, max_examples=32, seed=1)
    assert len(limited) == 32 and len(np.unique(many[limited])) == 16
    np.testing.assert_array_equal(np.bincount(many[limited])[many[limited]], 2)
    assert set(many[pick_examples(many, 2, max_examples=32, seed=2)]) != set(many[limited])

    _, _, _, data = linear
    section, _, _ = _linear_run(linear, tmp_path, "torchscript", examples_per_class=4, seed=7)
    indices = [e["index"] for e in section["examples"]]
    np.testing.assert_array_equal(indices, pick_examples(data.y, 4, seed=7))
    assert [e["label"] for e in section["examples"]] == [c for c in "012" for _ in range(4)]
    assert section["classes"] == 3


def test_vector_figures_are_bars_up_to_64_features_then_heat_strips():
    bars = example_figure(np.linspace(-1, 1, 64), title="bars")
    strip = example_figure(np.linspace(-1, 1, 65), title="strip")
    sequence = example_figure(np.ones((12, 3)), title="sequence")
    try:
        assert len(bars.axes[0].patches) == 64 and not bars.axes[0].images
        assert strip.axes[0].images[0].get_array().shape == (1, 65)
        assert sequence.axes[0].images[0].get_array().shape == (3, 12)  # features x positions
    finally:
        for figure in (bars, strip, sequence):
            plt.close(figure)


def test_unknown_spec_values_are_refused():
    for bad in ({"method": "lrp"}, {"steps": 0}, {"baseline": "blur"},
                {"examples_per_class": 0}, {"target": "top2"}, {"rule": "left"},
                {"examples_per_class": 33}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            parse_spec([{"kind": "attribution", **bad}])


def test_analyze_writes_the_section_its_artifacts_and_the_html(cnn_files, digits, tmp_path):
    options = JobOptions(analyses=parse_spec([{"kind": "attribution", "steps": 16}]),
                         device="cpu", max_samples=300)
    report = analyze(cnn_files["onnx"], digits, tmp_path, options)
    document = json.loads((tmp_path / "report.json").read_text())
    section = document["analyses"]["attribution"]
    assert section == report.analyses["attribution"]
    assert section["method"] == "integrated_gradients"
    assert section["layer"] == document["model"]["layers"][-1]["name"]
    assert len(section["examples"]) == 20 and (tmp_path / section["grid"]).is_file()
    for example in section["examples"]:
        assert (tmp_path / example["image"]).is_file()
        assert np.load(tmp_path / example["array"]).shape == DIGITS_SHAPE
    html = (tmp_path / "report.html").read_text()
    assert 'id="attribution"' in html and section["grid"] in html
    assert section["examples"][0]["image"] in html


def test_gradients_are_asked_for_the_attributed_layer_only(tmp_path):
    """Hardmax feeds only a side branch: the logits keep their gradients and are attributed
    (gradient = the target's row of W2 diag(relu') W1); the branch's layer is skipped."""
    from tests.models.test_onnx_gradients import _branch_model

    model = load_model(_branch_model(tmp_path / "branch.onnx"), device="cpu")
    x = np.random.default_rng(0).normal(size=(12, 6)).astype(np.float32)
    ctx = _context(model, Dataset.from_arrays("test:branch", x, np.arange(12) % 3), tmp_path)
    logits = run(_spec(method="gradient", layers=["logits"]), ctx)
    assert logits.skipped is None and len(logits.examples) == 6
    scaled = run(_spec(method="gradient", layers=["scaled"]), ctx)
    assert scaled.skipped == "depends on ONNX node 'hardmax' (Hardmax), which has no torch version"
