"""Linear probes (Alain & Bengio 2016): hand-built XOR network, scikit-learn agreement, report."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import nn

from layerlens.analyses.base import AnalysisContext, ArtifactWriter
from layerlens.analyses.linear_probe import science as linear_probe
from layerlens.analyses.linear_probe.run import run
from layerlens.analyses.linear_probe.science import fit_linear_probes, row_space, standardize
from layerlens.analyses.linear_probe.spec import LinearProbeSection, LinearProbeSpec
from layerlens.analyze import analyze
from layerlens.capture import capture_activations
from layerlens.data import Dataset
from layerlens.errors import InputError
from layerlens.models import load_model
from layerlens.options import JobOptions
from layerlens.spec import parse_spec
from tests.nets import save_scripted


def _run(spec, ctx) -> dict:
    """The section as the report holds it (JSON data)."""
    return run(spec, ctx).model_dump(mode="json")


def _xor_data(n_per_corner: int = 100, noise: float = 0.15, seed: int = 0) -> Dataset:
    """x near the corners of {-1, 1}^2; label 1 when the signs differ (XOR)."""
    rng = np.random.default_rng(seed)
    corners = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=np.float32)
    x = np.repeat(corners, n_per_corner, axis=0)
    x = x + noise * rng.standard_normal(x.shape).astype(np.float32)
    y = (np.sign(x[:, 0]) != np.sign(x[:, 1])).astype(np.int64)
    return Dataset.from_arrays("xor", x, y)


def _xor_net() -> nn.Sequential:
    """Layer 0: the identity; layer 1: x1+x2, -(x1+x2), x1-x2, x2-x1; layer 2: their ReLUs.

    The XOR classes are not linearly separable in layers 0 and 1 (linear in x) but
    are in layer 2: relu(x1+x2) + relu(-x1-x2) - relu(x1-x2) - relu(x2-x1) = |x1+x2| - |x1-x2|
    is about +2 on class 0 and -2 on class 1.
    """
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 4), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[0].bias.zero_()
        net[1].weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]))
        net[1].bias.zero_()
    return net


@pytest.fixture
def xor_context(tmp_path):
    data = _xor_data()
    model = load_model(save_scripted(_xor_net(), tmp_path / "xor.pt"), input_shape=(2,),
                       device="cpu")
    activations = capture_activations(model, data, batch_size=64)
    return AnalysisContext(model, data, activations, ArtifactWriter(tmp_path), device="cpu")


def test_xor_is_linearly_readable_only_after_the_relu(xor_context, tmp_path):
    section = _run(LinearProbeSpec(kind="linear_probe"), xor_context)
    json.dumps(section)  # plain JSON
    LinearProbeSection.model_validate(section)
    rows = {row["layer"]: row for row in section["layers"]}
    assert [row["layer"] for row in section["layers"]] == ["0", "1", "2"]  # forward order
    # A linear read-out of XOR gets at most 3 of the 4 corners right: <= 0.75 (the
    # regularised optimum on balanced corners is near chance).
    assert rows["0"]["test_accuracy"] <= 0.75
    assert rows["1"]["test_accuracy"] <= 0.75
    assert rows["2"]["test_accuracy"] >= 0.98
    assert rows["2"]["train_accuracy"] >= 0.98
    assert all(row["converged"] for row in rows.values())
    assert section["n_train"] + section["n_test"] == 400 and section["n_test"] == 80
    assert section["chance_accuracy"] == pytest.approx(0.5, abs=1e-12)  # stratified 40/40
    assert (tmp_path / section["image"]).stat().st_size > 0


def test_same_seed_same_result_other_seed_other_split(xor_context):
    first = _run(LinearProbeSpec(kind="linear_probe", seed=3), xor_context)
    again = _run(LinearProbeSpec(kind="linear_probe", seed=3), xor_context)
    other = _run(LinearProbeSpec(kind="linear_probe", seed=4), xor_context)
    assert first == again
    assert first["layers"] != other["layers"]  # another split: other losses


def test_stop_keeps_the_layers_already_fit(xor_context):
    calls = []

    def stop_at_once(step, total, metrics):
        calls.append((step, total))
        return True

    xor_context.progress = stop_at_once
    section = _run(LinearProbeSpec(kind="linear_probe"), xor_context)
    # On CPU only layers of equal width share a batch: "1" and "2" (4 features, fit
    # first, widest first) then "0" (2 features). The first report comes when the
    # first group is done; stopping there keeps its probes and skips "0".
    assert calls == [(2, 3)]
    rows = section["layers"]
    assert [row["layer"] for row in rows] == ["0", "1", "2"]
    assert "stopped" in rows[0]["skipped"]
    assert rows[2]["test_accuracy"] >= 0.98


def test_layer_selection(xor_context):
    section = _run(LinearProbeSpec(kind="linear_probe", layers=["2", "0"]), xor_context)
    assert [row["layer"] for row in section["layers"]] == ["0", "2"]  # forward order


def test_standardize_uses_train_statistics_and_zeroes_constant_features():
    train = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    test = torch.tensor([[2.0, 7.0], [5.0, 5.0]])
    train_z, test_z = standardize(train, test)  # mean (2, 5), std (1, 0): column 2 constant
    torch.testing.assert_close(train_z, torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(test_z, torch.tensor([[0.0, 0.0], [3.0, 0.0]]))


def test_constant_layer_predicts_the_train_majority_without_nan():
    rng = np.random.default_rng(0)
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    informative = (np.eye(3)[y] * 3 + rng.standard_normal((100, 3))).astype(np.float32)
    mixed = np.hstack([informative, np.full((100, 2), 7.0, dtype=np.float32)])
    constant = np.full((100, 5), -2.5, dtype=np.float32)
    train, test = np.arange(0, 100, 2), np.arange(1, 100, 2)
    flat, partly, informed = fit_linear_probes([constant, mixed, informative], y,
                                               train=train, test=test)
    assert flat is not None and partly is not None and informed is not None
    assert np.isfinite([flat.train_loss, partly.train_loss]).all()
    # No usable feature: the probe is the intercept only, so it predicts class 0 (the
    # train majority) and its accuracy is that class's share, exactly.
    assert flat.test_accuracy == pytest.approx(np.mean(y[test] == 0), abs=1e-12)
    # Constant columns change nothing: same optimum as without them (tolerance 1e-5).
    assert partly.train_loss == pytest.approx(informed.train_loss, abs=1e-5)
    assert partly.test_accuracy == informed.test_accuracy


def test_batched_fit_equals_one_layer_at_a_time():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    widths = (3, 8, 20)
    layers = [(np.eye(4)[y] @ rng.standard_normal((4, d)) + rng.standard_normal((300, d)))
              .astype(np.float32) for d in widths]
    train, test = np.arange(240), np.arange(240, 300)
    # max_padding=10 forces all three layers into one zero-padded batch.
    together = fit_linear_probes(layers, y, train=train, test=test, max_padding=10.0, tol=1e-5)
    for layer, joint in zip(layers, together, strict=True):
        (alone,) = fit_linear_probes([layer], y, train=train, test=test, tol=1e-5)
        assert joint is not None and alone is not None and joint.converged
        assert joint.train_loss == pytest.approx(alone.train_loss, rel=1e-4)  # float32
        assert joint.test_accuracy == alone.test_accuracy


def test_row_space_coordinates_reproduce_the_activations(monkeypatch):
    monkeypatch.setattr(linear_probe, "ROW_SPACE_CHUNK_VALUES", 20 * 7)  # 29 column slices
    rng = np.random.default_rng(2)
    low_rank = rng.standard_normal((30, 5)) @ rng.standard_normal((5, 200))  # rank 5
    train = torch.as_tensor(low_rank[:20], dtype=torch.float64)
    test = torch.as_tensor(low_rank[20:], dtype=torch.float64)
    z_train, z_test, basis = row_space(train, test)
    assert basis.shape == (5, 200) and z_train.shape == (20, 5) and z_test.shape == (10, 5)
    torch.testing.assert_close(basis @ basis.T, torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(z_train @ basis, train)  # X = Z B
    torch.testing.assert_close(z_test @ basis, test)  # test rows lie in the same space here
    empty = row_space(torch.zeros((4, 9)), torch.zeros((2, 9)))
    assert [tuple(t.shape) for t in empty] == [(4, 1), (2, 1), (1, 9)]


def test_a_wide_layer_fit_in_its_row_space_is_the_same_probe(monkeypatch):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 80)
    # 60 train samples, 600 features: 10x wider than the split, so fit in the row space
    wide = (np.eye(3)[y] @ rng.standard_normal((3, 600)) * 0.1
            + rng.standard_normal((80, 600))).astype(np.float32)
    train, test = np.arange(60), np.arange(60, 80)
    widths = []

    def spy(train_z, test_z):
        widths.append(train_z.shape[1])
        return row_space(train_z, test_z)

    monkeypatch.setattr(linear_probe, "row_space", spy)
    (reduced,) = fit_linear_probes([wide], y, train=train, test=test)
    assert widths == [600]  # the reduced path ran
    monkeypatch.setattr(linear_probe, "ROW_SPACE_RATIO", 10**9)  # the full-width fit
    (direct,) = fit_linear_probes([wide], y, train=train, test=test)
    assert reduced is not None and direct is not None
    assert reduced.converged and direct.converged
    # both stopped with every gradient entry <= tol = 1e-4 in the layer's own coordinates
    assert reduced.grad_norm <= 1e-4 and direct.grad_norm <= 1e-4
    assert reduced.n_features == direct.n_features == 600
    # the same strictly convex objective, minimised to the same tolerance (float32)
    assert reduced.train_loss == pytest.approx(direct.train_loss, rel=1e-3)
    assert reduced.train_accuracy == direct.train_accuracy
    assert reduced.test_accuracy == direct.test_accuracy < 1.0  # a weak signal: 0.4 here


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"C": 0.0}, "C"), ({"tol": -1.0}, "tol"), ({"max_iter": 0}, "max_iter"),
    ({"max_padding": 0.5}, "max_padding"), ({"train": np.array([0, 999])}, "train"),
])
def test_invalid_parameters_name_the_key(kwargs, key):
    y = np.arange(10) % 2
    args = {"train": np.arange(8), "test": np.arange(8, 10), **kwargs}
    with pytest.raises(InputError, match=key):
        fit_linear_probes([np.ones((10, 2), np.float32)], y, **args)


@pytest.mark.slow
def test_agrees_with_scikit_learn_on_the_trained_cnn(cnn_files, digits):
    model = load_model(cnn_files["torchscript"], sample_shapes=digits.sample_shapes,
                       device="cpu")
    activations = capture_activations(model, digits)
    train, test = digits.split(test_fraction=0.2, seed=0)
    features = [layer.values for layer in activations.layers.values()]
    ours = fit_linear_probes(features, digits.y, train=train, test=test)
    for name, values, probe in zip(activations.layers, features, ours, strict=True):
        scaler = StandardScaler().fit(values[train])
        with warnings.catch_warnings(), threadpool_limits(limits=1):  # 1 thread: no contention
            warnings.simplefilter("error", ConvergenceWarning)  # the reference must converge
            reference = LogisticRegression(C=1.0, max_iter=2000).fit(
                scaler.transform(values[train]), digits.y[train])
        expected = reference.score(scaler.transform(values[test]), digits.y[test])
        assert probe is not None and probe.converged, name
        assert probe.test_accuracy == pytest.approx(expected, abs=0.01), name  # 1 point


def test_analyze_writes_a_valid_section(tmp_path):
    data = _xor_data(n_per_corner=50)
    model_path = save_scripted(_xor_net(), tmp_path / "xor.pt")
    report = analyze(model_path, data, tmp_path / "out",
                     JobOptions(analyses=parse_spec([{"kind": "linear_probe"}]),
                                    device="cpu"))
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    section = LinearProbeSection.model_validate(document["analyses"]["linear_probe"])
    assert [row.layer for row in section.layers] == [layer.name for layer in report.model.layers]
    assert (tmp_path / "out" / section.image).is_file()
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="linear_probe"' in html and f'src="{section.image}"' in html


def test_layer_groups_count_the_solver_state_not_only_the_rows():
    """24 samples of eight 4096-wide layers: as rows they share one group; with 1000 classes
    the L-BFGS state (26 vectors of 1000 x 4096 values per layer) puts each layer alone."""
    from layerlens.analyses.lbfgs import LBFGS_HISTORY, SOLVER_VECTORS
    from layerlens.analyses.linear_probe.science import DEFAULT_GROUP_BYTES, _groups

    widths = [4096] * 8
    assert len(_groups(widths, 24, DEFAULT_GROUP_BYTES, 1.0)) == 1
    solver_cost = 24 + (2 * LBFGS_HISTORY + SOLVER_VECTORS) * 1000
    assert [len(g) for g in _groups(widths, solver_cost, DEFAULT_GROUP_BYTES, 1.0)] == [1] * 8
