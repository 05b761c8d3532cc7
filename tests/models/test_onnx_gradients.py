"""ONNX gradients per layer: what an operator without a torch version, a mistranslation or
amplified rounding costs, and what it does not. onnxruntime runs the model, so it loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from layerlens.analyze import analyze
from layerlens.data import Dataset
from layerlens.errors import GradientUnavailableError
from layerlens.models import load_model, onnx_model, onnx_torch
from layerlens.options import JobOptions

node = helper.make_node


def _save(path: Path, nodes: list[onnx.NodeProto], initializers: dict[str, np.ndarray],
          features: int, opset: int = 17) -> Path:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", features])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, ["n", "k"])],
        [numpy_helper.from_array(np.asarray(value), name)
         for name, value in initializers.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def _onnxruntime_values(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every node output of the file as onnxruntime computes it, by node name."""
    model = onnx.load(path)
    outputs = {n.output[0]: n.name for n in model.graph.node}
    del model.graph.output[:]
    model.graph.output.extend(helper.make_empty_tensor_value_info(v) for v in outputs)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return dict(zip(outputs.values(), session.run(list(outputs), {"x": x}), strict=True))


def _dataset(features: int) -> Dataset:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((48, features)).astype(np.float32)
    return Dataset.from_arrays("test:gradients", x, np.arange(48) % 3)


def _maximise(path: Path, folder: Path, features: int):
    options = JobOptions(analyses=[{"kind": "activation_maximization", "steps": 8,
                                    "max_units": 2}])
    return analyze(path, _dataset(features), folder, options)


def _branch_model(path: Path) -> Path:
    """hidden -> relu -> {hardmax -> scaled, logits}: Hardmax (no torch version) on a branch
    that runs before the logits."""
    rng = np.random.default_rng(0)
    return _save(path, [
        node("Gemm", ["x", "w1", "b1"], ["h"], name="hidden", transB=1),
        node("Relu", ["h"], ["r"], name="relu"),
        node("Hardmax", ["r"], ["m"], name="hardmax"),
        node("Mul", ["m", "two"], ["s"], name="scaled"),
        node("Gemm", ["r", "w2", "b2"], ["y"], name="logits", transB=1),
    ], {"w1": rng.standard_normal((8, 6)).astype(np.float32),
        "b1": rng.standard_normal(8).astype(np.float32),
        "two": np.float32(2.0),
        "w2": rng.standard_normal((3, 8)).astype(np.float32),
        "b2": np.zeros(3, np.float32)}, features=6)


def test_an_operator_without_torch_version_costs_only_the_layers_computed_from_it(tmp_path):
    """Hardmax feeds only a side branch: the logits after it in execution order keep their
    gradients (exact: W2 diag(relu') W1), activation maximisation runs on every layer but
    the two computed from Hardmax, which it skips naming the operator."""
    model = load_model(_branch_model(tmp_path / "branch.onnx"), device="cpu")
    assert model.layer_names == ["hidden", "relu", "hardmax", "scaled", "logits"]
    assert model.differentiable and model.gradient_error is None
    reason = "depends on ONNX node 'hardmax' (Hardmax), which has no torch version"
    assert model.layer_gradient_errors == {"hardmax": reason, "scaled": reason}
    assert [model.gradient_error_for(name) for name in ("hidden", "relu", "logits")] == [None] * 3

    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(tmp_path / "branch.onnx")
               .graph.initializer}
    x = torch.randn(4, 6, requires_grad=True)
    model.capture_torch(x, ["logits"])["logits"][:, 1].sum().backward()
    active = (x.detach().numpy() @ weights["w1"].T + weights["b1"]) > 0
    expected = (weights["w2"][1] * active) @ weights["w1"]
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(GradientUnavailableError, match="layer 'scaled' has no gradients: "
                                                       "depends on ONNX node 'hardmax'"):
        model.capture_torch(x, ["logits", "scaled"])

    report = _maximise(tmp_path / "branch.onnx", tmp_path / "report", features=6)
    assert [(entry.layer, entry.reason) for entry in report.model.layers_without_gradients] == [
        ("hardmax", reason), ("scaled", reason)]
    assert report.model.differentiable
    rows = {row["layer"]: row for row in report.analyses["activation_maximization"]["layers"]}
    assert list(rows) == model.layer_names
    for name in ("hidden", "relu", "logits"):
        assert len(rows[name]["units"]) == 2 and "skipped" not in rows[name]
    for name in ("hardmax", "scaled"):
        assert rows[name]["skipped"] == f"no gradients: {reason}"
    document = json.loads((tmp_path / "report" / "report.json").read_text())
    assert document["model"]["layers_without_gradients"][0] == {"layer": "hardmax",
                                                                "reason": reason}


def _levels() -> np.ndarray:
    return np.float32(13.8) + np.random.default_rng(1).uniform(0, 0.01, 64).astype(np.float32)


def _tiny_sigmoid_model(path: Path) -> Path:
    """exp(13.8 + 1e-6 x) ~ 1e6, minus (that + 16), then a sigmoid: values ~1e-7, a
    detector's empty background."""
    level = _levels()
    return _save(path, [
        node("Mul", ["x", "tiny"], ["scaled"], name="scale"),
        node("Add", ["scaled", "level"], ["shifted"], name="shift"),
        node("Exp", ["shifted"], ["big"], name="exp"),
        node("Sub", ["big", "offset"], ["logits"], name="cancel"),
        node("Sigmoid", ["logits"], ["y"], name="sigmoid"),
    ], {"tiny": np.float32(1e-6), "level": level,
        "offset": (np.exp(level.astype(np.float64)) + 16).astype(np.float32)}, features=64)


def test_a_sigmoid_of_tiny_values_after_amplified_rounding_loads_with_gradients(tmp_path):
    """The PaddleOCR detector's case, both ways it disagrees with a per-layer check:
    onnxruntime's and torch's exp differ by one float32 ulp (0.06 at 1e6), which the
    subtraction makes 0.35% of its ~17-sized result; and onnxruntime's sigmoid, accurate
    to ~1e-7 of its range, differs from torch's by ~7% of these ~1e-7 values even on the
    same input. Neither is a mistranslation: the model loads with gradients everywhere."""
    path = _tiny_sigmoid_model(tmp_path / "tiny.onnx")
    probe = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    ort_values = _onnxruntime_values(path, probe)
    (cancel,) = onnx_torch.OnnxTorchGraph(onnx.load(path))({"x": torch.from_numpy(probe)},
                                                           ["logits"])
    sigmoid = ort_values["sigmoid"]
    same_input = torch.sigmoid(torch.from_numpy(ort_values["cancel"])).numpy()
    assert np.abs(cancel.numpy() - ort_values["cancel"]).max() > 0.002 * 17
    assert 1e-8 < np.abs(sigmoid).max() < 1e-6
    assert np.abs(same_input - sigmoid).max() > 0.02 * np.abs(sigmoid).max()

    model = load_model(path, device="cpu")
    assert model.layer_gradient_errors == {} and model.differentiable
    x = torch.from_numpy(probe).requires_grad_()
    model.capture_torch(x, ["sigmoid"])["sigmoid"].sum().backward()
    # d sigmoid / dx = s (1 - s) exp(shifted) 1e-6 per feature, s within 7% (the torch
    # path's own rounding of the cancellation)
    exact_logits = np.exp(1e-6 * probe + _levels()) - np.exp(_levels().astype(np.float64)) - 16
    exact = 1 / (1 + np.exp(-exact_logits))
    np.testing.assert_allclose(x.grad.numpy(),
                               exact * (1 - exact) * np.exp(1e-6 * probe + _levels()) * 1e-6,
                               rtol=0.1)


def _gated_model(path: Path) -> Path:
    """hidden -> {gate = sigmoid(hidden) -> gated = gate * hidden -> out, side = relu}."""
    rng = np.random.default_rng(2)
    return _save(path, [
        node("Gemm", ["x", "w1"], ["h"], name="hidden", transB=1),
        node("Sigmoid", ["h"], ["g"], name="gate"),
        node("Relu", ["h"], ["r"], name="side"),
        node("Mul", ["g", "h"], ["m"], name="gated"),
        node("Gemm", ["m", "w2"], ["y"], name="out", transB=1),
    ], {"w1": rng.standard_normal((8, 5)).astype(np.float32),
        "w2": rng.standard_normal((3, 8)).astype(np.float32)}, features=5)


def _mistranslated(attrs, inputs):
    return torch.tanh(inputs[0])  # not a sigmoid


def _raising(attrs, inputs):
    raise RuntimeError("no kernel for this variant")


@pytest.mark.parametrize(("translation", "problem"), [
    (_mistranslated, "the torch path disagrees with onnxruntime at layer 'gate' (max "),
    (_raising, "the torch path fails at ONNX node 'gate': RuntimeError: no kernel"),
], ids=["mistranslated", "raising"])
def test_a_wrong_translation_costs_the_layers_computed_from_it(tmp_path, monkeypatch,
                                                               translation, problem):
    """Capture stays onnxruntime's; the gate and what is computed from it lose gradients
    with the reason, in the model and the report; the side branch keeps them."""
    path = _gated_model(tmp_path / "gated.onnx")
    monkeypatch.setitem(onnx_torch._OPS, "Sigmoid", translation)
    model = load_model(path, device="cpu")
    assert list(model.layer_gradient_errors) == ["gate", "gated", "out"]
    assert all(reason.startswith(problem) for reason in model.layer_gradient_errors.values())
    assert model.gradient_error_for("side") is None and model.differentiable

    x = np.random.default_rng(3).standard_normal((7, 5)).astype(np.float32)
    captured = model.capture(x, model.layer_names)
    for name, value in _onnxruntime_values(path, x).items():
        np.testing.assert_array_equal(captured[name], value, err_msg=name)
    inputs = torch.from_numpy(x).requires_grad_()
    model.capture_torch(inputs, ["side"])["side"].sum().backward()
    assert inputs.grad.abs().sum() > 0

    report = _maximise(path, tmp_path / "report", features=5)
    assert [entry.layer for entry in report.model.layers_without_gradients] == [
        "gate", "gated", "out"]
    rows = {row["layer"]: row for row in report.analyses["activation_maximization"]["layers"]}
    assert rows["out"]["skipped"].startswith(f"no gradients: {problem}")
    assert "units" in rows["side"] and "units" in rows["hidden"]


def test_a_torch_path_that_cannot_be_built_leaves_capture(tmp_path, monkeypatch):
    def unbuildable(model):
        raise ValueError("cannot read initializer 'w1'")

    monkeypatch.setattr(onnx_model, "OnnxTorchGraph", unbuildable)
    model = load_model(_gated_model(tmp_path / "gated.onnx"), device="cpu")
    assert not model.differentiable
    assert model.gradient_error == ("the torch path of this ONNX model fails: ValueError: "
                                    "cannot read initializer 'w1'")
    assert model.gradient_error_for("side") == model.gradient_error
    assert model.capture(np.ones((2, 5), np.float32), ["out"])["out"].shape == (2, 3)
