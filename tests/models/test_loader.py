"""Input shape resolution, normalisation and device choice."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from layerlens.errors import InputError, ShapeMismatchError
from layerlens.models import load_model, resolve_device
from layerlens.models.base import InputSpec
from tests.nets import save_scripted


def _identity_onnx(path, dims):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_onnx_shape_comes_from_the_graph(cnn_files):
    assert load_model(cnn_files["onnx"], device="cpu").input_spec.shape == (1, 8, 8)


def test_onnx_symbolic_dims_take_the_dataset_or_user_shape(tmp_path):
    path = _identity_onnx(tmp_path / "m.onnx", ["n", 3, "h", "w"])
    assert load_model(path, sample_shapes=[(12,), (3, 2, 2)], device="cpu").input_spec.shape \
        == (3, 2, 2)
    assert load_model(path, input_shape=(3, 4, 5), device="cpu").layer("relu").shape == (3, 4, 5)
    with pytest.raises(ShapeMismatchError, match="contradicts"):
        load_model(path, input_shape=(2, 4, 5), device="cpu")
    with pytest.raises(ShapeMismatchError, match="give input_shape") as raised:
        load_model(path, sample_shapes=[(12,)], device="cpu")
    assert raised.value.options == ("input_shape",)


def test_torchscript_tries_dataset_shapes_in_order(cnn_files):
    model = load_model(cnn_files["torchscript"], sample_shapes=[(64,), (1, 8, 8)], device="cpu")
    assert model.input_spec.shape == (1, 8, 8)
    with pytest.raises(ShapeMismatchError, match="does not record its input shape"):
        load_model(cnn_files["torchscript"], device="cpu")


def test_mlp_takes_flat_samples(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(64, 5), torch.nn.Tanh())
    model = load_model(save_scripted(net, tmp_path / "m.pt"), sample_shapes=[(64,), (1, 8, 8)],
                       device="cpu")
    assert model.input_spec.shape == (64,) and model.layer_names == ["0", "1"]


def test_per_channel_normalisation():
    spec = InputSpec((2, 1, 2), mean=(1.0, 10.0), std=(2.0, 5.0))
    x = np.array([[1, 3, 10, 20]], np.float32)
    np.testing.assert_allclose(spec.preprocess(x), [[[[0, 1]], [[0, 2]]]])


def test_normalisation_must_match_channels(cnn_files):
    with pytest.raises(InputError, match="1 channels"):
        load_model(cnn_files["onnx"], mean=(0.5, 0.5, 0.5), device="cpu")
    with pytest.raises(InputError, match="positive"):
        load_model(cnn_files["onnx"], std=(0.0,), device="cpu")


def test_device_choice():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_capture_matches_cpu(cnn_files, digits):
    x = digits.x[:32].reshape(-1, 1, 8, 8)
    for path in cnn_files.values():
        cpu = load_model(path, device="cpu", input_shape=(1, 8, 8))
        gpu = load_model(path, device="cuda", input_shape=(1, 8, 8))
        assert gpu.device == "cuda"
        a = cpu.capture(x, cpu.layer_names)
        b = gpu.capture(x, gpu.layer_names)
        for name in cpu.layer_names:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-3, atol=1e-3)
