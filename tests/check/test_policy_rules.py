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


def _compared(matrix: list[list[float | None]], layers_b: list[str], *,
              undefined: list[dict] | None = None, compared: bool = True) -> dict:
    """GOOD plus a similarity section comparing its layers with a baseline's ``layers_b``."""
    names = [layer["name"] for layer in GOOD["model"]["layers"]]
    best = [{"layer": n, "match": layers_b[max(range(len(row)), key=lambda j: row[j] or -1)]}
            for n, row in zip(names, matrix, strict=True)]
    section = {"layers_a": names, "layers_b": layers_b, "matrix": matrix, "image": "cka.png",
               "compared_to": {"name": "base.onnx"} if compared else None,
               "best_matches": best, "undefined": undefined or []}
    return {**GOOD, "analyses": {**GOOD["analyses"], "similarity": section}}


# rows conv, relu, fc, out of GOOD; the diagonal is each layer's CKA to its namesake
SAME_NAMES = [[0.99, 0.5, 0.2, 0.1], [0.5, 0.97, 0.3, 0.2],
              [0.2, 0.3, 0.95, 0.4], [0.1, 0.2, 0.96, 0.42]]


def test_min_cka_to_baseline_reads_the_same_named_layer_not_the_best_match():
    """out's best match is the baseline's fc (0.96), but its namesake scores 0.42."""
    report = _compared(SAME_NAMES, ["conv", "relu", "fc", "out"])
    outcomes = evaluate(_policy({"layers": "*", "min_cka_to_baseline": 0.9}), report)
    assert [(o.layer, o.value, o.passed) for o in outcomes] == [
        ("conv", 0.99, True), ("relu", 0.97, True), ("fc", 0.95, True), ("out", 0.42, False)]
    assert outcomes[-1].metric == "similarity.cka_to_baseline"
    assert "vs baseline 'out'" in outcomes[-1].threshold and outcomes[-1].image == "cka.png"
    line = output.verdict(outcomes)
    assert line == "3 passed, 1 failed: similarity.cka_to_baseline @ * at out"


def test_min_cka_to_baseline_falls_back_to_the_best_match_of_a_renamed_layer():
    report = _compared(SAME_NAMES, ["conv", "relu", "fc", "logits"])
    outcome = evaluate(_policy({"layer": "out", "min_cka_to_baseline": 0.9}), report)[0]
    assert (outcome.value, outcome.passed) == (0.96, True)
    assert "vs baseline 'fc', best match" in outcome.threshold


def test_an_undefined_cka_fails_with_its_reason():
    matrix = [row[:] for row in SAME_NAMES]
    matrix[1] = [None] * 4
    report = _compared(matrix, ["conv", "relu", "fc", "out"], undefined=[
        {"model": "a", "layer": "relu", "reason": "constant over the samples"}])
    outcome = evaluate(_policy({"layer": "relu", "min_cka_to_baseline": 0.5}), report)[0]
    assert not outcome.passed and "constant over the samples" in outcome.threshold


@pytest.mark.parametrize(("report", "needle"), [
    (GOOD, "no similarity analysis"),
    (_compared(SAME_NAMES, ["conv", "relu", "fc", "out"], compared=False), "--baseline-model"),
])
def test_min_cka_to_baseline_needs_a_comparison_with_the_baseline(report, needle):
    with pytest.raises(PolicyError, match=needle):
        evaluate(_policy({"layer": "out", "min_cka_to_baseline": 0.9}), report)


def test_the_cka_rule_adds_the_similarity_analysis_to_the_policys():
    policy = _policy({"layer": "out", "min_cka_to_baseline": 0.9},
                     analyses=[{"kind": "linear_probe"}])
    assert policy.needs_baseline_model and not policy.needs_baseline
    assert policy.job_analyses() == [{"kind": "linear_probe"}, {"kind": "similarity"}]
    own = [{"kind": "similarity", "debiased": True}]
    assert _policy({"layer": "out", "min_cka_to_baseline": 0.9}, analyses=own
                   ).job_analyses() == own


@pytest.mark.parametrize(("rule", "needle"), [
    ("{layer: fc, min_cka_to_baseline: 0.9, min: 0.5}", "a rule of its own"),
    ("{metric: linear_probe.test_accuracy, layer: fc, min_cka_to_baseline: 0.9}",
     "a rule of its own"),
    ("{metric: similarity.cka_to_baseline, layer: fc, min: 0.9}", "min_cka_to_baseline: 0.9"),
    ("{layer: fc, min_cka_to_baseline: 1.5}", "less than or equal to 1"),
])
def test_invalid_cka_rules_are_one_line_errors(tmp_path, rule, needle):
    path = tmp_path / "policy.yaml"
    path.write_text(f"rules:\n  - {rule}\n")
    with pytest.raises(PolicyError, match=needle) as caught:
        load_policy(path)
    assert "\n" not in str(caught.value)
