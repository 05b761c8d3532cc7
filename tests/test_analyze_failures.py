"""Finished work is never lost: a failing analysis or layer is marked failed with its reason,
the others keep their results, and the report (JSON and HTML) is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import layerlens.analyses.projection.run as projection_run
from layerlens.analyze import analyze
from layerlens.data import resolve_dataset
from layerlens.options import JobOptions
from tests.nets import save_scripted


@pytest.fixture(scope="module")
def binary_classifier(tmp_path_factory):
    """A breast-cancer MLP with ONE output logit (sigmoid head), as binary classifiers ship."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
    return save_scripted(net, tmp_path_factory.mktemp("binary") / "binary.pt")


def _options(**changes) -> JobOptions:
    values = {"max_samples": 200, "input_shape": [30], "analyses": [
        {"kind": "linear_probe"}, {"kind": "projection"},
        {"kind": "mutual_information"}, {"kind": "activation_maximization", "steps": 16}]}
    values.update(changes)
    return JobOptions(**values)


def test_a_binary_classifier_gets_every_analysis(binary_classifier, tmp_path):
    """t-SNE cannot embed the one-logit layer in 2-D; it is drawn by PCA and says so."""
    report = analyze(binary_classifier, "builtin:breast_cancer", tmp_path, _options())
    assert not report.warnings
    assert set(report.analyses) == {"linear_probe", "projection", "mutual_information",
                                    "activation_maximization"}
    logit = report.analyses["projection"]["layers"][-1]
    assert logit["layer"] == "2" and logit["n_features"] == 1
    assert logit["method"] == "pca" and "one feature" in logit["note"]
    assert 0.5 <= logit["neighborhood_hit"] <= 1.0
    assert report.analyses["projection"]["layers"][0]["method"] == "tsne"


def test_a_failing_analysis_leaves_the_others_and_the_report(binary_classifier, tmp_path,
                                                             monkeypatch):
    def broken(spec, ctx):
        raise RuntimeError("t-SNE exploded\nsecond line of the traceback text")

    monkeypatch.setattr(projection_run, "run", broken)
    report = analyze(binary_classifier, "builtin:breast_cancer", tmp_path, _options())
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["analyses"]["projection"] == {
        "failed": "RuntimeError: t-SNE exploded", "error_type": "RuntimeError"}
    probe = document["analyses"]["linear_probe"]["layers"]
    assert [row["layer"] for row in probe] == ["0", "1", "2"]
    assert all(0.5 < row["test_accuracy"] <= 1.0 for row in probe)
    assert document["analyses"]["mutual_information"]["layers"][0]["I_TY"] > 0
    assert report.warnings[0].analysis == "projection"
    page = (tmp_path / "report.html").read_text()
    assert "This analysis failed and has no results" in page and "t-SNE exploded" in page


def test_a_failing_layer_leaves_the_other_layers(binary_classifier, tmp_path, monkeypatch):
    real = projection_run.project_layer

    def fails_on_one_layer(values, labels, **kwargs):
        if values.shape[1] == 16:
            raise np.linalg.LinAlgError("SVD did not converge")
        return real(values, labels, **kwargs)

    monkeypatch.setattr(projection_run, "project_layer", fails_on_one_layer)
    report = analyze(binary_classifier, "builtin:breast_cancer", tmp_path,
                     _options(analyses=[{"kind": "projection", "method": "pca"}]))
    rows = report.analyses["projection"]["layers"]
    assert [set(row) >= {"failed"} for row in rows] == [True, True, False]
    assert rows[0]["failed"] == "LinAlgError: SVD did not converge"
    assert rows[2]["neighborhood_hit"] > 0.5
    assert [(w.analysis, w.layer) for w in report.warnings] == [("projection", "0"),
                                                                ("projection", "1")]


def test_bad_input_inside_an_analysis_is_marked_invalid_input(binary_classifier, tmp_path):
    """k too large for the samples is known only once they are counted."""
    report = analyze(binary_classifier, resolve_dataset("builtin:breast_cancer"), tmp_path,
                     _options(max_samples=20, analyses=[{"kind": "linear_probe"},
                                                        {"kind": "projection", "k": 15}]))
    section = report.analyses["projection"]
    assert section["error_type"] == "invalid_input" and "projection.k" in section["failed"]
    assert "test_accuracy" in report.analyses["linear_probe"]["layers"][0]
