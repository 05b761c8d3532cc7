"""Two reports side by side (layerlens.comparison): on hand-built reports with known
differences, then ``GET /v1/jobs/{id}/compare/{other_id}`` on two real jobs, whose answer is
the document ``layerlens compare`` writes for the same two reports."""

from __future__ import annotations

import json

import pytest

from infra.db.models import Model
from infra.db.session import transaction
from infra.storage import open_storage
from layerlens.comparison import ComparisonError, compare_reports, load_report
from layerlens_client.cli import main as cli
from workers.tasks import JobRun, WorkerContext

A = {"model": {"sha256": "a" * 64, "format": "onnx",
               "layers": [{"name": "conv"}, {"name": "fc"}, {"name": "out"}]},
     "dataset": {"ref": "builtin:digits", "n_samples": 300},
     "analyses": {
         "linear_probe": {"n_train": 240, "converged_all": True, "layers": [
             {"layer": "conv", "test_accuracy": 0.5, "converged": True},
             {"layer": "fc", "test_accuracy": 0.75}]},
         "activation_maximization": {"plan": {"steps": 64}, "layers": [
             {"layer": "fc", "units": [{"unit": 3, "activation": 2.0},
                                       {"unit": 7, "activation": 1.0}]}]},
         "similarity": {"layers_a": ["conv", "fc"], "layers_b": ["conv", "fc"],
                        "matrix": [[1.0, 0.25], [0.25, 1.0]], "shape": [2, 2]}}}
B = {"model": {"sha256": "b" * 64, "format": "torchscript",
               "layers": [{"name": "fc"}, {"name": "conv"}, {"name": "head"}]},
     "dataset": {"ref": "builtin:digits", "n_samples": 300},
     "analyses": {
         "linear_probe": {"n_train": 240, "layers": [  # layers in another order
             {"layer": "fc", "test_accuracy": 0.5}, {"layer": "conv", "test_accuracy": 0.5}]},
         "activation_maximization": {"plan": {"steps": 32}, "layers": [
             {"layer": "fc", "units": [{"unit": 7, "activation": 1.5}]}]},
         "similarity": {"layers_a": ["fc", "conv"], "layers_b": ["fc", "conv"],
                        "matrix": [[1.0, 0.5], [0.5, 1.0]]},
         "projection": {"layers": [{"layer": "head", "neighborhood_hit": 0.9}]}}}


def _rows(document: dict, section: str) -> dict[tuple, tuple]:
    return {(r["layer"], r["metric"]): (r["a"], r["b"], r["difference"])
            for r in document["sections"][section]}


def test_every_number_side_by_side_matched_by_layer_and_item_names():
    document = compare_reports(A, B, source_a="a.json", source_b="b.json")
    assert document["layers"] == {"common": ["conv", "fc"], "only_a": ["out"],
                                  "only_b": ["head"]}
    assert (document["a"]["model"]["format"], document["b"]["source"]) == ("onnx", "b.json")
    assert _rows(document, "linear_probe") == {
        (None, "n_train"): (240, 240, 0),
        ("conv", "test_accuracy"): (0.5, 0.5, 0.0),
        ("fc", "test_accuracy"): (0.75, 0.5, -0.25)}  # booleans are not compared
    assert _rows(document, "activation_maximization") == {
        (None, "plan.steps"): (64, 32, -32),
        ("fc", "units[3].activation"): (2.0, None, None),  # unit 3 only in a
        ("fc", "units[7].activation"): (1.0, 1.5, 0.5)}
    # the matrix by layer names, whatever each report's order; shapes are not compared
    assert _rows(document, "similarity") == {
        ("conv", "matrix[conv]"): (1.0, 1.0, 0.0), ("conv", "matrix[fc]"): (0.25, 0.5, 0.25),
        ("fc", "matrix[conv]"): (0.25, 0.5, 0.25), ("fc", "matrix[fc]"): (1.0, 1.0, 0.0)}
    assert _rows(document, "projection") == {("head", "neighborhood_hit"): (None, 0.9, None)}


def test_unreadable_reports_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "plain.json").write_text('{"model": {}}')
    for path, needle in [(tmp_path / "none.json", "cannot read"),
                         (tmp_path / "plain.json", "not a layerlens report.json"),
                         (tmp_path, "cannot read")]:  # a folder without report.json
        with pytest.raises(ComparisonError, match=needle):
            load_report(path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "report.json").write_text(json.dumps(A))
    assert cli(["compare", str(tmp_path / "a"), str(tmp_path / "none.json")]) == 2
    stderr = capsys.readouterr().err
    assert "none.json" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.fixture
def model_id(settings, sessions, cnn_files) -> str:  # type: ignore[no-untyped-def]
    """The digits CNN as ONNX, stored and inspected."""
    blob = open_storage(settings.storage_url).put_file(cnn_files["onnx"])
    model = Model(sha256=blob.sha256, size_bytes=blob.size_bytes, status="ready",
                  name="cnn.onnx", format="onnx", input_shape=[1, 8, 8], layers=[])
    with transaction(sessions) as session:
        session.add(model)
    return model.id


def _job(api, model_id: str, max_samples: int) -> str:
    created = api.post("/v1/jobs", json={
        "model_id": model_id, "dataset": "builtin:digits", "max_samples": max_samples,
        "device": "cpu", "layers": ["8", "10"],  # two of the CNN's layers keep it short
        "analyses": [{"kind": "linear_probe"}]})
    assert created.status_code == 202, created.text
    return created.json()["id"]


@pytest.mark.slow  # two worker runs
def test_two_jobs_compared_over_http_as_the_command_compares_their_reports(
        api, settings, model_id, tmp_path, capsys):
    first, second = _job(api, model_id, 120), _job(api, model_id, 200)
    assert api.get(f"/v1/jobs/{first}/compare/{second}").status_code == 409  # not run yet
    for job_id in (first, second):
        JobRun(WorkerContext(settings), job_id).run()
    answer = api.get(f"/v1/jobs/{first}/compare/{second}")
    assert answer.status_code == 200, answer.text
    document = answer.json()
    rows = _rows(document, "linear_probe")
    assert rows[(None, "n_train")][2] == 160 - 96  # 80% of 200 and of 120 samples
    assert {layer for layer, _ in rows if layer is not None} == {"8", "10"}
    reports = []
    for name, job_id in (("a", first), ("b", second)):
        reports.append(tmp_path / name / "report.json")
        reports[-1].parent.mkdir()
        reports[-1].write_text(api.get(f"/v1/jobs/{job_id}/report").text)
    assert cli(["compare", *map(str, reports), "--out", str(tmp_path / "c.json")]) == 0
    assert "differ" in capsys.readouterr().out
    written = json.loads((tmp_path / "c.json").read_text())
    assert document["a"]["source"] == f"job {first}"
    for side in ("a", "b"):
        written[side]["source"] = document[side]["source"]
    assert written == document
    missing = api.get(f"/v1/jobs/{first}/compare/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
