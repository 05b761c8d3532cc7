"""Policies and rules on hand-built reports: every threshold kind, every refusal."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from layerlens_client.check import output
from layerlens_client.check.evaluate import evaluate
from layerlens_client.check.policy import Policy, PolicyError, load_policy


def _report(probe: dict[str, float], nh: dict[str, float] | None = None,
            ity: float = 3.0, h_y: float = 3.3219) -> dict:
    layers = list(probe)
    return {
        "model": {"layers": [{"name": n} for n in layers]},
        "analyses": {
            "linear_probe": {"image": "probe.png", "layers": [
                {"layer": n, "test_accuracy": a, "train_accuracy": 1.0} for n, a in probe.items()]},
            "projection": {"layers": [
                {"layer": n, "neighborhood_hit": v, "image": f"proj_{n}.png"}
                for n, v in (nh or {}).items()]},
            "mutual_information": {"H_Y": h_y, "layers": [
                {"layer": layers[-1], "I_TY": ity, "I_XT": 8.0}]},
        }}


GOOD = _report({"conv": 0.8, "relu": 0.85, "fc": 0.97, "out": 0.98},
               nh={"conv": 0.6, "relu": 0.7, "fc": 0.9, "out": 0.95})


def _policy(*rules: dict, **extra) -> Policy:
    return Policy.model_validate({"rules": list(rules), **extra})


def test_last_and_last_hidden_name_the_final_two_layers():
    outcomes = evaluate(_policy({"metric": "linear_probe.test_accuracy", "layer": "last_hidden",
                                 "min": 0.9},
                                {"metric": "linear_probe.test_accuracy", "layer": "last",
                                 "min": 0.99}), GOOD)
    assert [(o.layer, o.value, o.passed) for o in outcomes] == [("fc", 0.97, True),
                                                                 ("out", 0.98, False)]


def test_a_glob_checks_every_matching_layer():
    outcomes = evaluate(_policy({"metric": "projection.neighborhood_hit", "layers": "*u*",
                                 "min": 0.75}), GOOD)
    assert [(o.layer, o.passed) for o in outcomes] == [("relu", False), ("out", True)]
    assert outcomes[0].image == "proj_relu.png"


def test_fraction_of_the_label_entropy():
    rule = {"metric": "mutual_information.I_TY", "layer": "last",
            "min_fraction_of": "mutual_information.H_Y", "fraction": 0.9}
    assert evaluate(_policy(rule), _report({"a": 1, "b": 1}, ity=3.0))[0].passed
    low = evaluate(_policy(rule), _report({"a": 1, "b": 1}, ity=2.9))[0]
    assert not low.passed and "2.99" in low.threshold  # 0.9 x 3.3219


def test_max_drop_against_a_baseline():
    rule = {"metric": "linear_probe.test_accuracy", "layer": "fc", "max_drop": 0.02}
    before = _report({"conv": 0.8, "fc": 0.99})
    assert evaluate(_policy(rule), _report({"conv": 0.8, "fc": 0.975}), before)[0].passed
    assert not evaluate(_policy(rule), _report({"conv": 0.8, "fc": 0.96}), before)[0].passed
    with pytest.raises(PolicyError, match="--baseline"):
        evaluate(_policy(rule), GOOD, None)


@pytest.mark.parametrize(("rule", "needle"), [
    ({"metric": "linear_probe.test_accuracy", "layer": "fc9", "min": 0.5}, "no layer 'fc9'"),
    ({"metric": "linear_probe.test_acc", "layer": "fc", "min": 0.5}, "test_accuracy"),
    ({"metric": "projection.neighborhood_hit", "layers": "pool*", "min": 0.5}, "pool*"),
    ({"metric": "activation_maximization.activation", "layer": "fc", "min": 0},
     "no activation_maximization analysis"),
    ({"metric": "mutual_information.I_TY", "layer": "conv", "min": 0}, "no layer 'conv'"),
])
def test_a_rule_naming_what_the_report_lacks_is_refused_by_name(rule, needle):
    with pytest.raises(PolicyError, match=needle.replace("*", r"\*")):
        evaluate(_policy(rule), GOOD)


@pytest.mark.parametrize(("text", "needle"), [
    ("rules: []", "rules"),
    ("rules:\n  - {metric: linear_probe.test_accuracy, layer: fc}", "threshold"),
    ("rules:\n  - {metric: linear_probe.test_accuracy, min: 0.9}", "exactly one of layer"),
    ("rules:\n  - {metric: accuracy, layer: fc, min: 0.9}", "metric"),
    ("rules:\n  - {metric: linear_probe.test_accuracy, layer: fc, minimum: 0.9}", "minimum"),
    ("analyses: [{kind: projection}]\nrules:\n"
     "  - {metric: linear_probe.test_accuracy, layer: fc, min: 0.9}", "do not run linear_probe"),
    ("rules: {", "not valid YAML"),
    ("- just a list", "mapping"),
])
def test_invalid_policies_are_one_line_errors(tmp_path, text, needle):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=needle) as caught:
        load_policy(path)
    assert "\n" not in str(caught.value)


def test_junit_has_one_case_per_rule_and_layer_and_counts_failures(tmp_path):
    outcomes = evaluate(_policy({"metric": "projection.neighborhood_hit", "layers": "*",
                                 "min": 0.75}), GOOD)
    output.junit(outcomes, tmp_path / "junit.xml", suite="m.onnx", seconds=1.0)
    root = ET.parse(tmp_path / "junit.xml").getroot()
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == 4 and suite.get("failures") == "2" == root.get("failures")
    failed = [case.get("name") for case in cases if case.find("failure") is not None]
    assert failed == ["projection.neighborhood_hit @ * [conv]",
                      "projection.neighborhood_hit @ * [relu]"]


def test_summary_links_the_images_of_the_rules(tmp_path):
    outcomes = evaluate(_policy({"metric": "linear_probe.test_accuracy", "layer": "last",
                                 "min": 0.9, "name": "output separable"}), GOOD)
    output.summary(outcomes, tmp_path / "s.md", title="t", report_url="http://x/report.html",
                   image_url=lambda name: f"http://x/artifacts/{name}")
    text = (tmp_path / "s.md").read_text()
    assert "✅ passed" in text and "| output separable | `out` | 0.9800 |" in text
    assert "(http://x/artifacts/probe.png)" in text
