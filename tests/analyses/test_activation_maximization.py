"""Activation maximisation: closed-form maxima, a planted filter, the trained digits CNN."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from app.demo.model import digits_cnn
from layerlens.analyses.activation_maximization.joint import Target, chunk_targets, joint_score
from layerlens.analyses.activation_maximization.parametrization import (
    FourierImage,
    apply_transform,
    data_range,
)
from layerlens.analyses.activation_maximization.plan import (
    DEFAULT_STEPS,
    DEFAULT_UNITS,
    MAX_LAYERS,
    plan_run,
    spread_over_depth,
)
from layerlens.analyses.activation_maximization.run import dataset_objectives, run
from layerlens.analyses.activation_maximization.science import (
    PROGRESS_EVERY,
    maximize_activation,
    maximize_objectives,
    objective_values,
)
from layerlens.analyses.activation_maximization.spec import ActivationMaximizationSpec
from layerlens.analyses.base import AnalysisContext, ArtifactWriter
from layerlens.analyze import analyze
from layerlens.capture import capture_activations
from layerlens.data import Dataset
from layerlens.errors import InputError
from layerlens.models import load_model
from layerlens.options import JobOptions
from layerlens.spec import parse_spec
from tests.models.test_onnx_and_torchscript import _unsupported_op_model
from tests.nets import save_scripted


def _run(spec, ctx) -> dict:
    """The section as the report holds it (JSON data)."""
    return run(spec, ctx).model_dump(mode="json")


@pytest.fixture(autouse=True)
def _one_thread():
    """Batches of a few tiny inputs are latency-bound: on a shared 2-core machine a second
    intra-op thread only adds contention (measured 7x slower per step)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _spec(**keys) -> ActivationMaximizationSpec:
    return ActivationMaximizationSpec(kind="activation_maximization", **keys)


def _context(model, data: Dataset, folder, *, progress=None, **capture) -> AnalysisContext:
    folder.mkdir(parents=True, exist_ok=True)
    activations = capture_activations(model, data, **capture)
    return AnalysisContext(model, data, activations, ArtifactWriter(folder), device="cpu",
                           progress=progress)


def _labels(n: int) -> np.ndarray:
    return np.arange(n) % 2


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory):
    """The (untrained, seeded) digits CNN as TorchScript with 64 random 8x8 images."""
    torch.manual_seed(0)
    path = save_scripted(digits_cnn(), tmp_path_factory.mktemp("small") / "cnn.pt")
    model = load_model(path, input_shape=(1, 8, 8), device="cpu")
    x = np.random.default_rng(0).uniform(0, 16, (64, 1, 8, 8)).astype(np.float32)
    return model, Dataset.from_arrays("test:random", x, _labels(64))


def test_linear_unit_reaches_its_analytic_box_maximum(tmp_path):
    """Linear(6 -> 4) on inputs in [lo, hi]^6, normalised by mean/std before the model.

    The maximum of unit j over the box is sum_i max(w_ji u(lo_i), w_ji u(hi_i)) + b_j with
    u(v) = (v - mean) / std. Tolerance: the reported activation is within 1% of the range
    (max - min) of the unit over the box below the maximum, and >= 99% of the maximum.
    """
    torch.manual_seed(1)
    layer = nn.Linear(6, 4)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([3.0, 2.0, 4.0, 5.0]))
    model = load_model(save_scripted(nn.Sequential(layer), tmp_path / "linear.pt"),
                       input_shape=(6,), mean=[2.0], std=[4.0], device="cpu")
    rng = np.random.default_rng(0)
    lo = np.array([-3.0, 0.0, 1.0, -1.0, 5.0, -8.0])
    hi = np.array([2.0, 1.0, 9.0, 0.5, 6.0, 4.0])
    x = rng.uniform(lo, hi, (200, 6)).astype(np.float32)
    x[0], x[1] = lo, hi  # the box's corners are in the data, so the data range is [lo, hi]
    ctx = _context(model, Dataset.from_arrays("test:box", x, _labels(200)), tmp_path / "out")
    section = _run(_spec(units=[0, 1, 2, 3]), ctx)

    w, b = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
    at_lo, at_hi = w * (lo - 2.0) / 4.0, w * (hi - 2.0) / 4.0
    best = np.maximum(at_lo, at_hi).sum(axis=1) + b
    worst = np.minimum(at_lo, at_hi).sum(axis=1) + b
    assert np.all(best > 0)
    (entry,) = section["layers"]
    for unit in entry["units"]:
        j = unit["unit"]
        assert unit["activation"] >= 0.99 * best[j]
        assert best[j] - unit["activation"] <= 0.01 * (best[j] - worst[j])
        assert unit["activation"] <= best[j] + 1e-4  # never outside the box
        assert unit["activation"] > unit["dataset_max_activation"]
        optimised = np.load(tmp_path / "out" / unit["array"])
        assert optimised.shape == (6,)
        corner = np.where(w[j] > 0, hi, lo)
        np.testing.assert_allclose(optimised, corner, atol=0.01 * (hi - lo).max())
        assert (tmp_path / "out" / unit["image"]).is_file()
    assert (tmp_path / "out" / entry["grid"]).is_file()


PLANTED = np.array([[1.0, -0.5, -0.5, -0.5, 1.0],
                    [-0.5, 1.0, -0.5, 1.0, -0.5],
                    [-0.5, -0.5, 1.0, -0.5, -0.5],
                    [-0.5, 1.0, -0.5, 1.0, -0.5],
                    [1.0, -0.5, -0.5, -0.5, 1.0]], dtype=np.float32)


def test_neuron_objective_recovers_a_planted_filter(tmp_path):
    """Conv(1 -> 4, 5x5, padding 2) on 16x16 with channel 2's kernel set to an X.

    The centre neuron (8, 8) sees input rows/cols 6..10. Tolerance: Pearson correlation
    of that optimised patch with the planted kernel >= 0.9 (a random start: < 0.5).
    """
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 16 * 16, 3))
    with torch.no_grad():
        net[0].weight[2, 0] = torch.from_numpy(PLANTED)
        net[0].bias[2] = 0.0
    model = load_model(save_scripted(net, tmp_path / "planted.pt"), input_shape=(1, 16, 16),
                       device="cpu")
    x = np.random.default_rng(0).uniform(0, 1, (32, 1, 16, 16)).astype(np.float32)
    ctx = _context(model, Dataset.from_arrays("test:planted", x, _labels(32)), tmp_path / "o")
    section = _run(_spec(layers=["0"], units=[2], objective="neuron"), ctx)
    (unit,) = section["layers"][0]["units"]
    patch = np.load(tmp_path / "o" / unit["array"])[0, 6:11, 6:11]
    assert np.corrcoef(patch.ravel(), PLANTED.ravel())[0, 1] >= 0.9
    assert np.corrcoef(x[0, 0, 6:11, 6:11].ravel(), PLANTED.ravel())[0, 1] < 0.5
    assert unit["activation"] > unit["dataset_max_activation"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_trained_digits_cnn_units_reach_their_dataset_maximum(fmt, cnn_files, digits, tmp_path):
    """Full ``run()`` with default parameters on the conv and linear layers.

    Tolerance: at least 90% of the chosen units reach activation >= dataset maximum.
    """
    model = load_model(cnn_files[fmt], sample_shapes=digits.sample_shapes, device="cpu")
    layers = [layer for layer in model.layers if layer.op in ("Conv", "Conv2d", "Gemm",
                                                             "Linear")]
    assert len(layers) == 5
    ctx = _context(model, digits, tmp_path, layers=layers)
    section = _run(_spec(), ctx)
    assert section["steps"] == 512 and section["objective"] == "channel"
    units = [unit for entry in section["layers"] for unit in entry["units"]]
    assert len(units) == 8 * 5
    reached = [unit["activation"] >= unit["dataset_max_activation"] for unit in units]
    assert np.mean(reached) >= 0.9, [(u["activation"], u["dataset_max_activation"])
                                     for u in units]


def test_units_of_a_layer_run_as_one_batch(small_cnn):
    """8 units in one batch == 8 one-unit runs with the same seeds; one forward per step.

    Tolerance: optimised inputs agree to 1e-3 data units (range 0..16), activations to
    1e-4 relative; the batched run calls the model steps + 1 times (the final evaluation).
    """
    model, data = small_cnn
    layer = model.layer_names[5]  # the third convolution, (32, 4, 4)
    low, high = data_range(data.x, (1, 8, 8))
    calls = []

    def forward(x):
        calls.append(len(x))
        return model.capture_torch(x, [layer])[layer]

    units, seeds, steps = [0, 3, 5, 8, 13, 21, 30, 31], [11, 12, 13, 14, 15, 16, 17, 18], 64
    common = dict(input_shape=(1, 8, 8), low=low, high=high, steps=steps, device="cpu")
    batched = maximize_activation(forward, units=units, seeds=seeds, **common)
    assert calls == [8] * (steps + 1)
    for b, (unit, seed) in enumerate(zip(units, seeds, strict=True)):
        alone = maximize_activation(forward, units=[unit], seeds=[seed], **common)
        np.testing.assert_allclose(batched.inputs[b], alone.inputs[0], atol=1e-3)
        np.testing.assert_allclose(batched.activations[b], alone.activations[0], rtol=1e-4)
    assert len(calls) == (steps + 1) * 9
    # the optimisation did something: every unit beats its value on the mid-range start
    start = objective_values(forward(torch.full((8, 1, 8, 8), 8.0)), "channel").detach()
    assert np.all(batched.activations > start[0, units].numpy())


def test_units_of_several_layers_in_one_batch_equal_each_unit_alone(small_cnn):
    """Joint optimisation of (layer, unit) pairs from three layers == each pair alone.

    One capture call per step returns all three layers. Tolerance: optimised inputs agree
    to 1e-3 data units (range 0..16), activations to 1e-4 relative (float rounding differs
    between batch sizes).
    """
    model, data = small_cnn
    names = [model.layer_names[i] for i in (0, 3, 7)]  # conv, conv, flat
    targets = [Target(names[0], 2, 21), Target(names[1], 5, 22), Target(names[2], 9, 23),
               Target(names[0], 7, 24), Target(names[2], 0, 25)]
    low, high = data_range(data.x, (1, 8, 8))
    calls = []

    def capture(x, layers):
        calls.append(tuple(layers))
        return model.capture_torch(x, layers)

    steps = 48
    common = dict(input_shape=(1, 8, 8), low=low, high=high, steps=steps, device="cpu")
    joint = maximize_objectives(joint_score(capture, targets, "channel"),
                                seeds=[t.seed for t in targets], **common)
    assert calls == [tuple(dict.fromkeys(t.layer for t in targets))] * (steps + 1)
    for b, target in enumerate(targets):
        alone = maximize_activation(lambda x, t=target: model.capture_torch(x, [t.layer])[t.layer],
                                    units=[target.unit], seeds=[target.seed], **common)
        np.testing.assert_allclose(joint.inputs[b], alone.inputs[0], atol=1e-3)
        np.testing.assert_allclose(joint.activations[b], alone.activations[0], rtol=1e-4)


def test_each_joint_objective_depends_on_its_own_input_only(small_cnn):
    """d score_b / d x_c is exactly zero for c != b, and non-zero for c == b (layers before
    their ReLU, so no unit is dead)."""
    model, _ = small_cnn
    names = [model.layer_names[i] for i in (0, 5, 8)]  # conv, conv, linear
    targets = [Target(name, unit, 0) for name, unit in zip(names, (1, 4, 2), strict=True)]
    score = joint_score(model.capture_torch, targets, "neuron")
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 16
    for b in range(3):
        (grad,) = torch.autograd.grad(score(x.requires_grad_(True))[b], x)
        norms = grad.flatten(1).norm(dim=1)
        assert norms[b] > 0
        assert torch.all(norms[torch.arange(3) != b] == 0)


def test_chunks_are_bounded_by_memory_and_depth():
    """Hand-built costs (activation elements per input, in depth order)."""
    costs = [10.0] * 4 + [40.0] * 3
    # everything fits and the extra depth is cheaper than a call: one chunk
    assert chunk_targets(costs, capacity=1e9, ratio=2.0, call=1e3) == [range(0, 7)]
    # 40 > 2 x 10 and 4 inputs x 30 extra elements > 100: a new chunk at the deeper layer
    assert chunk_targets(costs, capacity=1e9, ratio=2.0, call=100) == [range(0, 4), range(4, 7)]
    # memory: at most 2 inputs at cost 40 in 100 elements, 4 at cost 10 in 40
    assert chunk_targets(costs, capacity=100, ratio=10.0, call=0) == [
        range(0, 4), range(4, 6), range(6, 7)]
    # a single input over capacity still gets its chunk
    assert chunk_targets([500.0], capacity=100) == [range(0, 1)]


def test_plan_spreads_layers_and_fits_the_budget():
    """159 layers with cumulative costs 1..159 (element units): the default cut, stated."""
    assert spread_over_depth(159, 16)[0] == 0 and spread_over_depth(159, 16)[-1] == 158
    assert len(spread_over_depth(159, 16)) == 16 and spread_over_depth(5, 16) == [0, 1, 2, 3, 4]
    costs, widths = [float(i + 1) for i in range(159)], [64] * 159
    chosen = spread_over_depth(159, MAX_LAYERS)
    full = DEFAULT_STEPS * DEFAULT_UNITS * sum(costs[i] for i in chosen)
    small = plan_run(costs, widths, layers_named=False, max_layers=16, units=None, steps=None,
                     budget=full)
    assert (small.units, small.steps, small.layers) == (DEFAULT_UNITS, DEFAULT_STEPS, chosen)
    assert small.reason.startswith("16 of 159 layers spread evenly over depth")
    big = plan_run(costs, widths, layers_named=False, max_layers=16, units=None, steps=None,
                   budget=full / 16)  # units 8 -> 2 (/4), then steps 512 -> 128 (/4)
    assert (big.units, big.steps, big.work) == (2, 128, full / 16)
    assert "2 units per layer instead of 8 and 128 steps instead of 512" in big.reason
    named = plan_run(costs, widths, layers_named=True, max_layers=16, units=None, steps=300,
                     budget=full / 16)  # what the spec names is never cut
    assert named.layers == list(range(159)) and named.steps == 300 and named.units == 1
    none = plan_run([], [], layers_named=False, max_layers=16, units=None, steps=None)
    assert (none.layers, none.work) == ([], 0.0) and none.reason.startswith("no selected layer")


def test_a_deep_model_gets_layers_spread_over_depth(small_cnn, tmp_path):
    """max_layers=3 on a model with more layers: first, middle and last layer, stated."""
    model, data = small_cnn
    ctx = _context(model, data, tmp_path)
    section = _run(_spec(max_layers=3, steps=2, max_units=1), ctx)
    n = len(model.layer_names)
    assert [entry["layer"] for entry in section["layers"]] == [
        model.layer_names[i] for i in (0, round((n - 1) / 2), n - 1)]
    plan = section["plan"]
    assert (plan["candidate_layers"], plan["optimised_layers"]) == (n, 3)
    assert plan["reason"].startswith(f"3 of {n} layers spread evenly over depth")
    named = _run(_spec(layers=model.layer_names[:4], max_layers=3, steps=2, max_units=1), ctx)
    assert len(named["layers"]) == 4  # naming layers overrides the spread


def test_a_layer_without_gradients_is_skipped_naming_the_operator(tmp_path):
    """conv -> flat -> Hardmax (no torch version): only the Hardmax layer is skipped."""
    path = tmp_path / "hardmax.onnx"
    _unsupported_op_model(path)
    model = load_model(path, device="cpu")
    x = np.random.default_rng(0).uniform(-1, 1, (16, 1, 2, 2)).astype(np.float32)
    ctx = _context(model, Dataset.from_arrays("test:hardmax", x, _labels(16)), tmp_path / "o")
    section = _run(_spec(steps=8), ctx)
    assert [entry["layer"] for entry in section["layers"]] == model.layer_names
    assert [("skipped" in entry) for entry in section["layers"]] == [False, False, True]
    assert "Hardmax" in section["layers"][-1]["skipped"]


def test_invalid_units_are_an_input_error_naming_units(small_cnn, tmp_path):
    model, data = small_cnn
    ctx = _context(model, data, tmp_path)
    with pytest.raises(InputError, match="units"):
        _run(_spec(units=[-1], steps=1), ctx)
    with pytest.raises(InputError, match=r"units.*16 units"):
        _run(_spec(layers=[model.layer_names[0]], units=[16], steps=1), ctx)


@pytest.mark.parametrize("objective", ["channel", "neuron"])
def test_dataset_objective_is_the_same_whatever_the_reduction(small_cnn, tmp_path, objective):
    """A spatial-mean-reduced conv layer and a randomly projected flat layer give the same
    unit scores as unreduced captures (recomputed from the model where needed).

    Tolerance: 1e-5 absolute (float32 activations of magnitude ~1-10).
    """
    model, data = small_cnn
    budget = len(data.x) * 100 * 4  # 100 stored features per sample
    cases = ((model.layers[2], "spatial_mean"), (model.layers[7], "random_projection"))
    for layer, method in cases:
        plain = _context(model, data, tmp_path / "plain", layers=[layer])
        expected = dataset_objectives(plain, [plain.activations.layers[layer.name]],
                                      objective)[layer.name]
        assert expected.shape == (64, layer.shape[0])
        reduced = _context(model, data, tmp_path / "reduced", layers=[layer],
                           memory_budget=budget, max_features=64)
        captured = reduced.activations.layers[layer.name]
        assert captured.reduction is not None and captured.reduction.method == method
        np.testing.assert_allclose(dataset_objectives(reduced, [captured], objective)[layer.name],
                                   expected, atol=1e-5)
        section = _run(_spec(layers=[layer.name], objective=objective, steps=2, max_units=3),
                      reduced)
        chosen = [unit["unit"] for unit in section["layers"][0]["units"]]
        assert chosen == list(np.argsort(-expected.mean(axis=0), kind="stable")[:3])


def test_stopping_keeps_the_partial_result(small_cnn, tmp_path):
    """Three small layers run as one batch: stopping at the first report keeps all three."""
    model, data = small_cnn
    seen = []

    def progress(step, total, metrics):
        seen.append((step, total))
        return True

    ctx = _context(model, data, tmp_path, layers=model.layers[:3])
    ctx.progress = progress
    section = _run(_spec(steps=100, max_units=2), ctx)
    assert section["plan"]["batches"] == 1
    assert seen == [(1, 4)]  # ceil(100 / 32) = 4 reports for the one batch
    assert len(section["layers"]) == 3
    for entry in section["layers"]:
        assert entry["steps_run"] == PROGRESS_EVERY and len(entry["units"]) == 2
    assert section["complete"] is False


def test_fourier_image_stays_in_range_and_jitter_is_an_exact_shift():
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    low, high = np.full((1, 1, 1), -2.0, np.float32), np.full((1, 1, 1), 3.0, np.float32)
    param = FourierImage.create(generators, (1, 16, 16), low, high, np.ones((1, 1)), "cpu")
    with torch.no_grad():
        param.spectrum.mul_(1e3)  # far outside the sigmoid's linear range
        images = param()
    assert images.shape == (2, 1, 16, 16)
    assert images.min() >= -2.0 and images.max() <= 3.0 and images.std() > 1.0
    theta = torch.tensor([[[1.0, 0.0, 2.0 * 1 / 16], [0.0, 1.0, 0.0]]] * 2)  # one px right
    shifted = apply_transform(images, theta)
    torch.testing.assert_close(shifted[..., :-1], images[..., 1:], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_analyze_writes_the_section_and_its_artifacts(cnn_files, digits, tmp_path):
    options = JobOptions(analyses=parse_spec([{"kind": "activation_maximization",
                                                   "steps": 64}]), device="cpu")
    report = analyze(cnn_files["torchscript"], digits, tmp_path, options)
    document = json.loads((tmp_path / "report.json").read_text())
    section = document["analyses"]["activation_maximization"]
    assert section == report.analyses["activation_maximization"]
    assert [entry["layer"] for entry in section["layers"]] == [
        layer["name"] for layer in document["model"]["layers"]]
    for entry in section["layers"]:
        assert (tmp_path / entry["grid"]).is_file()
        assert len(entry["units"]) == 8
        for unit in entry["units"]:
            assert (tmp_path / unit["image"]).is_file()
            array = np.load(tmp_path / unit["array"])
            assert array.shape == (1, 8, 8)
            assert array.min() >= 0.0 and array.max() <= 16.0
            assert 0 <= unit["dataset_example_index"] < digits.n_samples
    html = (tmp_path / "report.html").read_text()
    assert 'id="activation_maximization"' in html and section["layers"][0]["grid"] in html


def test_l2_decay_gives_the_closed_form_interior_optimum():
    """A linear unit a.x with L2 decay l2 * sum(((x - c) / r)^2) inside the box [lo, hi].

    The optimum is x_i = clip(c_i + a_i r_i^2 / (2 l2), lo_i, hi_i) (c: box centre, r: width).
    Tolerance: within 0.5% of the widest range after 512 steps.
    """
    a = torch.tensor([2.0, -1.0, 0.5, 0.1, -3.0])
    lo, hi = np.array([0.0, -1.0, 0.0, 2.0, -2.0]), np.array([1.0, 1.0, 4.0, 3.0, 0.0])
    l2 = 3.0

    def forward(x):
        return (x * a).sum(dim=1, keepdim=True)

    result = maximize_activation(forward, input_shape=(5,), units=[0], seeds=[0],
                                 low=lo.astype(np.float32), high=hi.astype(np.float32), l2=l2)
    centre, width = (lo + hi) / 2, hi - lo
    expected = np.clip(centre + a.numpy() * width**2 / (2 * l2), lo, hi)
    assert 0 < np.sum((expected > lo) & (expected < hi)) < 5  # some inside, some on a bound
    np.testing.assert_allclose(result.inputs[0], expected, atol=0.005 * width.max())
