"""Integer token inputs (issue 12 class 5): fed as they are, captured with known numbers;
a sequence layer (L, D) pooled over positions by ``sequence_pooling``, never over features;
gradient-based analyses skipped with the reason; the command line's flags.

The model is a hand-built ONNX embedding lookup, ``embed = E[ids]`` (L=3, D=2), and its
mean over positions, ``pool``: every activation is known exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from layerlens.analyze import analyze
from layerlens.capture import capture_activations
from layerlens.data import resolve_dataset
from layerlens.errors import InputError
from layerlens.models import load_model
from layerlens.options import JobOptions
from layerlens_client.cli import main

#: embedding table (vocabulary 5, D = 2): row v is (v, 10 v)
E = np.array([[v, 10.0 * v] for v in range(5)], dtype=np.float32)
IDS = np.array([[0, 1, 2], [4, 3, 2], [1, 1, 4], [2, 0, 3], [3, 4, 0], [4, 4, 1]] * 4,
               dtype=np.int64)


@pytest.fixture
def token_model(tmp_path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["embedded"], axis=0, name="embed"),
         helper.make_node("ReduceMean", ["embedded"], ["pooled"], axes=[1], keepdims=0,
                          name="pool")],
        "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(E, "E")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = tmp_path / "tokens.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture
def token_data(tmp_path: Path) -> str:
    path = tmp_path / "tokens.npz"
    np.savez(path, x=IDS, y=np.arange(len(IDS)) % 2)
    return str(path)


@pytest.mark.parametrize(("pooling", "expected"), [
    ("mean", E[IDS].mean(axis=1)), ("first", E[IDS[:, 0]]), ("last", E[IDS[:, -1]])])
def test_a_sequence_layer_is_pooled_over_positions(token_model, token_data, pooling,
                                                   expected):
    """embed (L=3, D=2) -> D features by the pooling (exact, atol 1e-6); pool (D,) is no
    sequence and is stored as it is: the mean of the embeddings over positions."""
    data = resolve_dataset(token_data)
    model = load_model(token_model, sample_shapes=data.sample_shapes, device="cpu",
                       inputs=data.inputs)
    assert model.input_spec.dtype == "int64" and model.input_spec.discrete
    acts = capture_activations(model, data, sequence_pooling=pooling, batch_size=7)
    embed, pool = acts.layers["embed"], acts.layers["pool"]
    assert embed.info.shape == (3, 2) and embed.reduction is not None
    assert embed.reduction.method == f"sequence_{pooling}" and embed.reduction.to == 2
    np.testing.assert_allclose(embed.values, expected, atol=1e-6)
    assert pool.reduction is None
    np.testing.assert_allclose(pool.values, E[IDS].mean(axis=1), atol=1e-6)
    assert embed.stats.count == len(IDS)  # statistics on the unpooled (L, D) values
    np.testing.assert_allclose(embed.stats.unit_max, E[IDS].max(axis=0).ravel())


def test_token_ids_must_be_whole_numbers(token_model, tmp_path):
    path = tmp_path / "half.npz"
    np.savez(path, x=IDS + 0.5, y=np.arange(len(IDS)) % 2)
    data = resolve_dataset(str(path))
    model = load_model(token_model, sample_shapes=data.sample_shapes, device="cpu")
    with pytest.raises(InputError, match=r"input 'ids' takes integers \(int64\); the "
                                         r"dataset's values are not whole numbers"):
        capture_activations(model, data)


def test_mean_and_std_are_refused_for_token_ids(token_model):
    with pytest.raises(InputError, match="mean and std normalise a float input; the model's "
                                         "input 'ids' takes int64"):
        load_model(token_model, sample_shapes=[(3,)], device="cpu", mean=[0.5])


def test_gradient_analyses_skip_a_discrete_input_and_the_report_states_the_pooling(
        token_model, token_data, tmp_path):
    options = JobOptions(analyses=[{"kind": "activation_maximization", "steps": 2},
                                   {"kind": "attribution"}, {"kind": "linear_probe"}],
                         device="cpu", sequence_pooling="last")
    analyze(token_model, token_data, tmp_path, options)
    report = json.loads((tmp_path / "report.json").read_text())
    act_max = report["analyses"]["activation_maximization"]["layers"]
    assert [row["layer"] for row in act_max] == ["embed", "pool"]
    assert all("input 'ids' is discrete (int64" in row["skipped"] for row in act_max)
    assert "input 'ids' is discrete (int64" in report["analyses"]["attribution"]["skipped"]
    assert not report["model"]["differentiable"]
    reductions = {row["layer"]: row["reduction"] for row in report["activations"]["layers"]}
    assert reductions["embed"]["method"] == "sequence_last" and reductions["pool"] is None
    probes = report["analyses"]["linear_probe"]["layers"]
    assert all(0.0 <= row["test_accuracy"] <= 1.0 for row in probes)


def test_the_command_line_takes_input_name_and_sequence_pooling(token_model, token_data,
                                                                tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["analyze", str(token_model), "--dataset", token_data, "--out", str(out),
                 "--analyses", "linear_probe", "--input-name", "ids",
                 "--sequence-pooling", "first", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["activations"]["layers"][0]["reduction"]["method"] == "sequence_first"
    for flags, needle in ((["--input-name", "tokens"], "'tokens' is not an input of the ONNX"),
                          (["--sequence-pooling", "middle"], "--sequence-pooling")):
        code = main(["analyze", str(token_model), "--dataset", token_data, "--out",
                     str(tmp_path / "bad"), "--analyses", "linear_probe", *flags])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and "Traceback" not in err, err
