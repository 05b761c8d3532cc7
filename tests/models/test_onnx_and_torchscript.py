"""The same network as ONNX and as TorchScript: same layers, same activations."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from layerlens.errors import GradientUnavailableError, ModelFormatError
from layerlens.models import load_model, onnx_torch
from tests.nets import TinyResNet


@pytest.fixture(scope="module")
def both(cnn_files):
    return {fmt: load_model(path, sample_shapes=[(64,), (1, 8, 8)], device="cpu")
            for fmt, path in cnn_files.items()}


def test_same_layers_by_position(both):
    onnx_model, ts_model = both["onnx"], both["torchscript"]
    assert onnx_model.input_spec.shape == ts_model.input_spec.shape == (1, 8, 8)
    shapes = [layer.shape for layer in ts_model.layers]
    assert [layer.shape for layer in onnx_model.layers] == shapes
    assert [layer.op for layer in ts_model.layers] == [
        "Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "Flatten", "Linear",
        "ReLU", "Linear"]
    assert [layer.op for layer in onnx_model.layers] == [
        "Conv", "Relu", "Conv", "Relu", "MaxPool", "Conv", "Relu", "Flatten", "Gemm", "Relu",
        "Gemm"]
    assert ts_model.layer_names[0] == "0" and onnx_model.layer_names == ts_model.layer_names


def test_same_activations_and_final_output(both, trained_cnn, digits):
    x = digits.x[:50].reshape(-1, 1, 8, 8)
    from_onnx = both["onnx"].capture(x, both["onnx"].layer_names)
    from_ts = both["torchscript"].capture(x, both["torchscript"].layer_names)
    for onnx_name, ts_name in zip(both["onnx"].layer_names, both["torchscript"].layer_names,
                                  strict=True):
        np.testing.assert_allclose(from_onnx[onnx_name], from_ts[ts_name], atol=1e-5,
                                   err_msg=f"{onnx_name} vs {ts_name}")
    with torch.no_grad():
        plain = trained_cnn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(from_ts[both["torchscript"].layer_names[-1]], plain, atol=1e-5)
    np.testing.assert_allclose(from_onnx[both["onnx"].layer_names[-1]], plain, atol=1e-5)


def test_gradients_agree_across_formats(both):
    grads = []
    for fmt in ("onnx", "torchscript"):
        model = both[fmt]
        assert model.differentiable, model.gradient_error
        x = torch.from_numpy(np.random.default_rng(0).random((3, 1, 8, 8), np.float32) * 16)
        x.requires_grad_(True)
        layer = model.layer_names[5]  # the third convolution
        model.capture_torch(x, [layer])[layer][:, 7].mean().backward()
        grads.append(x.grad.numpy())
    assert np.abs(grads[0]).sum() > 0
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_onnx_residual_model_gradients(tmp_path):
    torch.manual_seed(0)
    net = TinyResNet().eval()
    path = tmp_path / "resnet.onnx"
    torch.onnx.export(net, (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    model = load_model(path, device="cpu")
    assert model.layer_names[2:6] == ["blocks.0.conv1", "blocks.0.relu", "blocks.0.conv2",
                                      "blocks.0"]  # module paths, as TorchScript names them
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    reference = x.detach().clone().requires_grad_(True)
    model.capture_torch(x, [model.layer_names[-1]])[model.layer_names[-1]][:, 2].sum().backward()
    net(reference)[:, 2].sum().backward()
    torch.testing.assert_close(x.grad, reference.grad, atol=1e-5, rtol=1e-4)


def _unsupported_op_model(path) -> None:
    """Conv then Hardmax (which onnxruntime runs and the torch path does not)."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 1, 1, 1], [1.0, -1.0])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("Flatten", ["c"], ["f"], name="flat"),
         helper.make_node("Hardmax", ["f"], ["y"], name="hardmax")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_missing_operator_keeps_gradient_free_capture(tmp_path):
    path = tmp_path / "hardmax.onnx"
    _unsupported_op_model(path)
    assert "Hardmax" in onnx_torch.unsupported_operators(onnx.load(path))
    model = load_model(path, device="cpu")
    assert model.differentiable and list(model.layer_gradient_errors) == ["hardmax"]
    assert "Hardmax" in model.gradient_error_for("hardmax")
    captured = model.capture(np.ones((3, 1, 2, 2), np.float32), model.layer_names)
    assert captured["conv"].shape == (3, 2, 2, 2) and captured["hardmax"].shape == (3, 8)
    assert model.capture_torch(torch.ones(1, 1, 2, 2), ["flat"])["flat"].shape == (1, 8)
    with pytest.raises(GradientUnavailableError, match="Hardmax"):
        model.capture_torch(torch.ones(1, 1, 2, 2), ["hardmax"])


def test_agreement_check_tolerates_matching_nans(tmp_path):
    """Log of the random probe batch is NaN where the input is negative, on both paths."""
    graph = helper.make_graph(
        [helper.make_node("Log", ["x"], ["y"], name="log")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])])
    path = tmp_path / "log.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = load_model(path, device="cpu")
    assert model.differentiable and model.layer_names == ["log"]
    np.testing.assert_allclose(model.capture(np.full((2, 5), np.e, np.float32), ["log"])["log"],
                               np.ones((2, 5)), rtol=1e-6)


@pytest.mark.parametrize("fixed_batch", [1, 3])
def test_a_model_exported_with_a_fixed_batch_runs_in_chunks(tmp_path, fixed_batch):
    """Exports with a fixed batch (``[1, C, H, W]``, Reshape to ``[1, -1]`` baked in) give
    the same activations and gradients as the free-batch export, for any number of
    samples (7: a padded last chunk)."""
    torch.manual_seed(0)
    net = TinyResNet().eval()
    fixed, free = tmp_path / "fixed.onnx", tmp_path / "free.onnx"
    torch.onnx.export(net, (torch.zeros(fixed_batch, 1, 8, 8),), str(fixed), dynamo=False,
                      input_names=["x"])
    torch.onnx.export(net, (torch.zeros(2, 1, 8, 8),), str(free), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    dims = onnx.load(str(fixed)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == fixed_batch
    chunked, reference = load_model(fixed, device="cpu"), load_model(free, device="cpu")
    assert chunked.layer_names == reference.layer_names and chunked.differentiable
    x = np.random.default_rng(1).standard_normal((7, 1, 8, 8)).astype(np.float32)
    got = chunked.capture(x, chunked.layer_names)
    want = reference.capture(x, reference.layer_names)
    for name in chunked.layer_names:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)
    grads = []
    for model in (chunked, reference):
        inputs = torch.from_numpy(x).requires_grad_(True)
        model.capture_torch(inputs, [model.layer_names[-1]])[model.layer_names[-1]].sum(
        ).backward()
        grads.append(inputs.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)


def test_an_old_dropout_mask_output_is_not_a_layer(tmp_path):
    """Before opset 12 Dropout's mask output is a float tensor: it is not an activation."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["h"], name="relu"),
                               helper.make_node("Dropout", ["h"], ["y", "mask"], name="drop")],
                              "g", [x], [y])
    path = tmp_path / "dropout.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]), path)
    model = load_model(path, device="cpu")
    assert model.layer_names == ["relu", "drop"]


def test_an_input_without_a_feature_axis_is_refused_by_name(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [x], [y])
    path = tmp_path / "scalar.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    with pytest.raises(ModelFormatError, match="'x' has rank 1"):
        load_model(path, device="cpu")
