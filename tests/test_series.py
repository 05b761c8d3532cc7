"""Checkpoint series at the engine and command-line level: steps, layer matching, errors
and the chained t-SNE (the API end to end: tests/e2e/test_series_e2e.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from layerlens.analyses.projection.science import tsne_embedding
from layerlens.errors import InputError
from layerlens.options import JobOptions
from layerlens.series import analyze_series, checkpoint_steps, checkpoints, step_from_name
from layerlens_client.cli import main
from tests.series_nets import export, ib_network


def test_the_step_is_the_last_integer_of_the_file_name() -> None:
    assert step_from_name("epoch_012.onnx") == 12
    assert step_from_name("run3_step_120.pt") == 120
    assert step_from_name("model.pt2") is None  # the suffix's digit is not a step
    assert checkpoint_steps(["b_10.onnx", "a_2.onnx"]) == [10, 2]
    assert checkpoint_steps(["x.onnx", "y.onnx"], [5, 0]) == [5, 0]


@pytest.mark.parametrize(("names", "steps", "message"), [
    (["a_1.onnx", "b_2.onnx"], [1], "gives 1 steps for 2 model files"),
    (["a_1.onnx", "b_1.onnx"], None, "step 1 is given to more than one model file"),
    (["a.onnx", "b_2.onnx"], None, "cannot tell the training step of 'a.onnx'"),
    (["a_1.onnx"], None, "at least 2 model files"),
    (["a.onnx", "b.onnx"], [0, -5], "non-negative"),
])
def test_bad_steps_are_refused_with_the_reason(names, steps, message) -> None:
    with pytest.raises(InputError, match=message):
        checkpoint_steps(names, steps)


def test_tsne_follows_its_init() -> None:
    """Started from an embedding turned by 90 degrees, t-SNE keeps the turn: within 0.1
    (mean squared difference of standardised coordinates) of the turned start, and far (> 1)
    from the unturned one. Six separated Gaussian clusters in 10-D, 300 points."""
    rng = np.random.default_rng(0)
    x = np.repeat(5 * rng.normal(size=(6, 10)), 50, axis=0) + rng.normal(size=(300, 10))
    start = tsne_embedding(x, seed=0)
    turned = start @ np.array([[0.0, -1.0], [1.0, 0.0]])
    moved = tsne_embedding(x + 0.3 * rng.normal(size=x.shape), seed=0, init=turned)

    def gap(a: np.ndarray, b: np.ndarray) -> float:
        a, b = (a - a.mean(0)) / a.std(), (b - b.mean(0)) / b.std()
        return float(np.mean((a - b) ** 2))

    assert gap(turned, moved) < 0.1
    assert gap(start, moved) > 1.0


class _Renamed(nn.Module):
    """Layers named ``first``/``second``: nothing in common with a Sequential's 0, 1, ..."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(12, 4)
        self.second = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x)))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("series")
    longer = nn.Sequential(*ib_network(1), nn.Softmax(dim=1))  # one layer more, at the end
    return {"a": export(ib_network(0), folder / "epoch_3.onnx"),
            "b": export(longer, folder / "epoch_7.onnx"),
            "plain": export(ib_network(2), folder / "plain.onnx"),
            "renamed": export(_Renamed(), folder / "renamed_9.onnx")}


@pytest.mark.parametrize(("args", "message"), [
    (["a", "b", "--steps", "1,2,3"], "--steps gives 3 steps for 2 model files"),
    (["a", "b", "--steps", "4,4"], "step 4 is given to more than one model file"),
    (["a", "plain"], "cannot tell the training step of 'plain.onnx'"),
])
def test_series_errors_exit_2_with_one_line(capsys, files, tmp_path, args, message) -> None:
    models = [str(files[arg]) if arg in files else arg for arg in args]
    code = main(["analyze", *models, "--dataset", "builtin:ib12", "--analyses", "linear_probe",
                 "--max-samples", "100", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_checkpoints_without_a_common_layer_are_refused(files, tmp_path) -> None:
    """In-process (the command line's child turns this InputError into exit 2)."""
    options = JobOptions.parse({"analyses": [{"kind": "linear_probe"}], "max_samples": 100})
    with pytest.raises(InputError, match=re.escape("the checkpoints have no layer in common: "
                                                   "'epoch_3.onnx' has 11 layers")):
        analyze_series(checkpoints([files["a"], files["renamed"]]), "builtin:ib12", tmp_path,
                       options)


def test_layers_are_matched_by_name_in_the_last_checkpoints_order(files, tmp_path) -> None:
    """Checkpoints given out of order run in step order; the extra Softmax of the later one
    is left out; every step has a probe accuracy for every common layer, computed on one
    split (same n_train / n_test at every step)."""
    options = JobOptions.parse({"analyses": [{"kind": "linear_probe"}], "max_samples": 200})
    series = checkpoints([files["b"], files["a"]])
    report = analyze_series(series, "builtin:ib12", tmp_path, options)
    dynamics = report.dynamics
    assert dynamics is not None and dynamics.steps == [3, 7]
    assert dynamics.layers == [str(i) for i in range(11)]
    assert dynamics.linear_probe is not None
    accuracy = np.array(dynamics.linear_probe.test_accuracy, dtype=float)
    assert accuracy.shape == (2, 11) and np.isfinite(accuracy).all()
    assert "11" in [layer.name for layer in report.model.layers]  # analyses: the last one
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["dynamics"]["steps"] == [3, 7]
    assert (tmp_path / dynamics.linear_probe.image).is_file()
    assert 'id="dynamics"' in (tmp_path / "report.html").read_text()
