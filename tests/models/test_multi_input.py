"""Models with more than one input (issue 12 class 4): the dataset's ``x`` feeds the analysed
input, arrays named after the others feed them, per sample or one value for every sample
with the batch axis inserted where the model declares it; a missing one is a clear error.

The models are hand-built ONNX graphs whose outputs are known in closed form:
``out = x + w * extra`` and ``out = x + w * sum_k state[k] + sr``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from layerlens.capture import capture_activations
from layerlens.data import resolve_dataset
from layerlens.errors import InputError
from layerlens.models import load_model

W = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
N = 12


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _two_inputs(path: Path) -> Path:
    """(x, extra), both (batch, 4) float -> scaled = w * extra, out = x + scaled."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["extra", "w"], ["scaled"], name="scale"),
         helper.make_node("Add", ["x", "scaled"], ["out"], name="add")],
        "two_inputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(W, "w")])
    return _save(graph, path)


def _state_and_rate(path: Path) -> Path:
    """x (batch, 4), state (2, batch, 4) (batch axis 1, as silero-vad's), sr int64 scalar:
    out = x + w * (state[0] + state[1]) + sr."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["state", "axis0"], ["summed"], keepdims=0,
                          name="sum_state"),
         helper.make_node("Mul", ["summed", "w"], ["scaled"], name="scale"),
         helper.make_node("Cast", ["sr"], ["rate"], to=TensorProto.FLOAT, name="rate"),
         helper.make_node("Add", ["x", "scaled"], ["mixed"], name="mix"),
         helper.make_node("Add", ["mixed", "rate"], ["out"], name="add")],
        "state_and_rate",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 4]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(W, "w"), numpy_helper.from_array(np.array([0]), "axis0")])
    return _save(graph, path)


def _dataset(path: Path, **arrays: np.ndarray) -> str:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 4)).astype(np.float32)
    np.savez(path, x=x, y=np.arange(N) % 2, **arrays)
    return str(path)


def _capture(model_path: Path, ref: str, max_samples: int | None = None,
             batch_size: int = 5) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    data = resolve_dataset(ref).subsample(max_samples, seed=0)
    model = load_model(model_path, sample_shapes=data.sample_shapes, device="cpu",
                       inputs=data.inputs)
    acts = capture_activations(model, data, batch_size=batch_size)
    return ({name: layer.values for name, layer in acts.layers.items()}, data.x,
            dict(data.inputs.per_sample))


def test_a_per_sample_extra_input_changes_the_answer_row_by_row(tmp_path):
    """out = x + w * extra for every row (atol 1e-6), through subsampling and batches of 5
    that do not divide the 8 samples kept: the extra rows travel with their samples."""
    extra = np.random.default_rng(1).standard_normal((N, 4)).astype(np.float32)
    ref = _dataset(tmp_path / "d.npz", extra=extra)
    values, x, per_sample = _capture(_two_inputs(tmp_path / "m.onnx"), ref, max_samples=8)
    kept = per_sample["extra"]
    assert len(x) == len(kept) == 8
    np.testing.assert_allclose(values["add"], x + W * kept, atol=1e-6)
    assert not np.allclose(values["add"], x, atol=0.1)  # the extra input changed it


def test_a_shared_extra_input_is_one_value_for_every_sample(tmp_path):
    extra = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    ref = _dataset(tmp_path / "d.npz", extra=extra)
    values, x, _ = _capture(_two_inputs(tmp_path / "m.onnx"), ref)
    np.testing.assert_allclose(values["add"], x + W * extra, atol=1e-6)


def test_a_shared_state_gets_its_batch_axis_where_the_model_declares_it(tmp_path):
    """state (2, 4) in the dataset is fed as (2, batch, 4); the scalar sr as a scalar."""
    state = np.array([[1.0, 0.0, 2.0, 0.0], [0.5, 1.0, 0.0, -1.0]], dtype=np.float32)
    ref = _dataset(tmp_path / "d.npz", state=state, sr=np.array(3, dtype=np.int64))
    model_path = _state_and_rate(tmp_path / "m.onnx")
    values, x, _ = _capture(model_path, ref)
    np.testing.assert_allclose(values["add"], x + W * state.sum(axis=0) + 3.0, atol=1e-6)
    model = load_model(model_path, sample_shapes=[(4,)], device="cpu",
                       inputs=resolve_dataset(ref).inputs)
    assert {o.name: o.batch_axis for o in model.other_inputs} == {"state": 1, "sr": None}


def test_a_per_sample_state_moves_its_sample_axis_to_the_batch_axis(tmp_path):
    state = np.random.default_rng(2).standard_normal((N, 2, 4)).astype(np.float32)
    ref = _dataset(tmp_path / "d.npz", state=state, sr=np.array(0, dtype=np.int64))
    values, x, _ = _capture(_state_and_rate(tmp_path / "m.onnx"), ref)
    np.testing.assert_allclose(values["add"], x + W * state.sum(axis=1), atol=1e-5)


def test_input_name_picks_the_input_x_feeds(tmp_path):
    """With input_name 'extra', the dataset's x feeds 'extra' and its array named after the
    other input, 'x', feeds that: out = other + w * x; the layers are those computed from
    'extra'."""
    rng = np.random.default_rng(3)
    other = rng.standard_normal((N, 4)).astype(np.float32)
    path = tmp_path / "d.npz"
    x = rng.standard_normal((N, 4)).astype(np.float32)
    np.savez(path, x=x, y=np.arange(N) % 2)
    data = resolve_dataset(str(path))
    data = type(data).from_arrays(data.ref, x, data.y, others={"x": other})
    model = load_model(_two_inputs(tmp_path / "m.onnx"), sample_shapes=data.sample_shapes,
                       device="cpu", input_name="extra", inputs=data.inputs)
    assert model.input_spec.name == "extra"
    acts = capture_activations(model, data)
    assert list(acts.layers) == ["scale", "add"]
    np.testing.assert_allclose(acts.layers["add"].values, other + W * x, atol=1e-6)


def test_a_missing_input_names_it_its_shape_dtype_and_the_array_to_add(tmp_path):
    ref = _dataset(tmp_path / "d.npz", sr=np.array(3, dtype=np.int64))
    with pytest.raises(InputError) as caught:
        load_model(_state_and_rate(tmp_path / "m.onnx"), sample_shapes=[(4,)], device="cpu",
                   inputs=resolve_dataset(ref).inputs)
    message = str(caught.value)
    assert "'state' (shape (2, batch, 4), float32)" in message
    assert "add an array 'state' to the dataset .npz" in message
    assert "(2, 4) for every sample" in message and "'sr'" in message
    assert "\n" not in message


def test_an_unknown_input_name_lists_the_inputs(tmp_path):
    with pytest.raises(InputError, match=r"input_name 'ids' is not an input .*x, extra"):
        load_model(_two_inputs(tmp_path / "m.onnx"), sample_shapes=[(4,)], device="cpu",
                   input_name="ids")


def test_an_upload_inspection_without_a_dataset_lists_the_layers(tmp_path):
    """No dataset at hand (inputs=None): the other inputs are zeros, and the layers computed
    from x are listed."""
    model = load_model(_state_and_rate(tmp_path / "m.onnx"), sample_shapes=[(4,)],
                       device="cpu", inputs=None)
    assert [(layer.name, layer.shape) for layer in model.layers] == [("mix", (4,)),
                                                                      ("add", (4,))]


def test_a_checkpoint_series_feeds_the_other_inputs_too(tmp_path):
    """Every checkpoint of a series is loaded and captured with the dataset's other arrays,
    as a single model is (without them each load would be refused for the missing input)."""
    from layerlens.options import JobOptions
    from layerlens.series import analyze_series, checkpoints

    paths = [_two_inputs(tmp_path / f"epoch_{step}.onnx") for step in (1, 2)]
    ref = _dataset(tmp_path / "d.npz",
                   extra=np.random.default_rng(1).standard_normal((N, 4)).astype(np.float32))
    options = JobOptions.parse({"analyses": [{"kind": "linear_probe"}]})
    report = analyze_series(checkpoints(paths), ref, tmp_path / "out", options)
    assert report.dynamics is not None and report.dynamics.steps == [1, 2]
    assert report.dynamics.layers == ["add"]  # "scale" depends on extra alone
