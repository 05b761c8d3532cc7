"""``layerlens check`` as a real process: in-process engine and through the embedded service.

The damaged model is the trained digits CNN with the entries of every weight tensor
shuffled (seeded). Measured on 300 samples: the output layer's probe accuracy falls from
about 0.97 to about 0.68 and the last hidden layer's PCA neighbourhood hit from about 0.59
to about 0.28, so the thresholds below (0.85, 0.45) leave wide margins both ways.

min_cka_to_baseline compares with the TorchScript export of the trained CNN. Measured on
300 samples, the ONNX export of the same network has linear CKA 1 (to 1e-9) at every
layer; the damaged copy about 0.99 at the first convolution, falling to about 0.82, 0.76 and
0.62 at the last three layers, so the bound 0.9 fails the output layer by a wide margin.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from app.demo.model import DIGITS_SHAPE, export_onnx, export_torchscript
from layerlens_client.check import main as check_main
from tests.e2e import launch

pytestmark = pytest.mark.slow

POLICY = """\
analyses:
  - {kind: linear_probe}
  - {kind: projection, method: pca}
max_samples: 300
rules:
  - name: output layer separable
    metric: linear_probe.test_accuracy
    layer: last
    min: 0.85
  - name: last hidden neighbourhoods
    metric: projection.neighborhood_hit
    layer: last_hidden
    min: 0.45
"""


CKA_POLICY = """\
analyses: [{kind: similarity}]
max_samples: 300
rules:
  - {name: representations kept, layers: "*", min_cka_to_baseline: 0.9}
"""
OUTPUT_LAYER = "10"  # the CNN is an nn.Sequential: layers are named by index


def check(*args: object, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", "check", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def models(trained_cnn, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("check-models")
    damaged = copy.deepcopy(trained_cnn)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in damaged.parameters():
            order = torch.randperm(weight.numel(), generator=generator)
            weight.copy_(weight.flatten()[order].reshape(weight.shape))
    (folder / "default").mkdir()  # torch's default exporter: f.onnx beside f.onnx.data
    torch.onnx.export(trained_cnn, (torch.zeros(2, *DIGITS_SHAPE),), folder / "default" / "f.onnx")
    return {"good": export_onnx(trained_cnn, folder / "good.onnx", DIGITS_SHAPE),
            "damaged": export_onnx(damaged, folder / "damaged.onnx", DIGITS_SHAPE),
            "baseline": export_torchscript(trained_cnn, folder / "good.pt"),
            "with_data": folder / "default" / "f.onnx"}


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def good_local(models, policy, tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("good-local")
    done = check(models["good"], "--dataset", "builtin:digits", "--policy", policy,
                 "--out", out, "--junit", out / "junit.xml", "--summary", out / "summary.md")
    return done, out


def _junit_failures(path: Path) -> tuple[int, int]:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return len(suite.findall("testcase")), int(suite.get("failures", "-1"))


def _junit_failed_cases(path: Path) -> list[str]:
    return [str(case.get("name")) for case in ET.parse(path).getroot().iter("testcase")
            if case.find("failure") is not None]


@pytest.fixture(scope="module")
def cka_policy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cka-policy") / "cka.yaml"
    path.write_text(CKA_POLICY)
    return path


def _cka_check(model: Path, baseline: Path, policy: Path, out: Path,
               *server: str) -> subprocess.CompletedProcess[str]:
    return check(model, "--dataset", "builtin:digits", "--policy", policy, "--input-shape",
                 "1,8,8", "--baseline-model", baseline, "--out", out, "--junit",
                 out / "junit.xml", *server)


def _assert_cka_verdicts(good: subprocess.CompletedProcess[str],
                         damaged: subprocess.CompletedProcess[str], out: Path) -> None:
    """The good model passes at every layer; the damaged one fails, its output layer named
    in the JUnit file and in the console's last line."""
    assert good.returncode == 0, good.stdout + good.stderr
    assert _junit_failed_cases(out / "good" / "junit.xml") == []
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    failed = _junit_failed_cases(out / "damaged" / "junit.xml")
    assert f"representations kept [{OUTPUT_LAYER}]" in failed, failed
    last = damaged.stdout.strip().splitlines()[-2]  # before the report's address
    named = last.partition(" failed: representations kept at ")[2].split(", ")
    assert OUTPUT_LAYER in named, damaged.stdout


def test_a_good_model_passes_in_process(good_local):
    done, out = good_local
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed, 0 failed" in done.stdout
    assert _junit_failures(out / "junit.xml") == (2, 0)
    assert "✅ passed" in (out / "summary.md").read_text()
    assert (out / "report.json").is_file() and (out / "report.html").is_file()


def test_a_damaged_model_fails_with_the_rules_named(models, policy, tmp_path):
    done = check(models["damaged"], "--dataset", "builtin:digits", "--policy", policy,
                 "--out", tmp_path, "--junit", tmp_path / "junit.xml")
    assert done.returncode == 1, done.stdout + done.stderr
    failing = [line for line in done.stdout.splitlines() if line.rstrip().endswith("FAIL")]
    assert any(line.startswith("output layer separable") for line in failing), done.stdout
    assert any(line.startswith("last hidden neighbourhoods") for line in failing), done.stdout
    assert _junit_failures(tmp_path / "junit.xml") == (2, 2)


def test_min_cka_to_baseline_passes_the_network_and_fails_its_damaged_copy(models, cka_policy,
                                                                           tmp_path):
    good = _cka_check(models["good"], models["baseline"], cka_policy, tmp_path / "good")
    damaged = _cka_check(models["damaged"], models["baseline"], cka_policy,
                         tmp_path / "damaged")
    _assert_cka_verdicts(good, damaged, tmp_path)
    section = json.loads((tmp_path / "good" / "report.json").read_text())["analyses"][
        "similarity"]
    assert section["compared_to"]["name"] == "good.pt"
    names = section["layers_b"]  # the same network in two formats: CKA 1 (tolerance 1e-6)
    assert [section["matrix"][i][names.index(name)] for i, name in
            enumerate(section["layers_a"])] == pytest.approx([1.0] * len(names), abs=1e-6)


def test_min_cka_to_baseline_without_a_readable_baseline_model_is_exit_2(models, cka_policy,
                                                                         tmp_path, capsys):
    """In this process (the same code as the command's): refused before any analysis runs."""
    common = [str(models["good"]), "--dataset", "builtin:digits", "--policy", str(cka_policy),
              "--out", str(tmp_path)]
    garbage = tmp_path / "baseline.onnx"
    garbage.write_bytes(b"not a model")
    for extra, needle in [([], "pass --baseline-model FILE"),
                          (["--baseline-model", str(tmp_path / "no.onnx")], "does not exist"),
                          (["--baseline-model", str(garbage)], f"the baseline model {garbage}")]:
        assert check_main([*common, *extra]) == 2
        stderr = capsys.readouterr().err
        assert needle in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_a_drop_against_the_baseline_fails(models, good_local, tmp_path):
    policy = tmp_path / "drop.yaml"
    policy.write_text(POLICY.split("rules:")[0] + "rules:\n"
                      "  - {metric: linear_probe.test_accuracy, layer: last, max_drop: 0.02}\n")
    baseline = good_local[1] / "report.json"
    same = check(models["good"], "--dataset", "builtin:digits", "--policy", policy,
                 "--baseline", baseline, "--out", tmp_path / "same")
    assert same.returncode == 0, same.stdout + same.stderr
    worse = check(models["damaged"], "--dataset", "builtin:digits", "--policy", policy,
                  "--baseline", baseline, "--out", tmp_path / "worse")
    assert worse.returncode == 1 and ">= baseline" in worse.stdout


@pytest.mark.parametrize(("policy_text", "needle"), [
    ("rules: [{metric: linear_probe.test_accuracy, layer: fc7, min: 0.9}]\n"
     "analyses: [{kind: linear_probe}]\nmax_samples: 100", "no layer 'fc7'"),
    ("rules: [{metric: linear_probe.test_accuracy, layer: last}]", "threshold"),
    ("rules: [{metric: linear_probe.accuracy, layer: last, min: 0.5}]\n"
     "analyses: [{kind: linear_probe}]\nmax_samples: 100", "test_accuracy"),
])
def test_a_bad_policy_is_exit_2_with_one_line(models, tmp_path, policy_text, needle):
    policy = tmp_path / "bad.yaml"
    policy.write_text(policy_text)
    done = check(models["good"], "--dataset", "builtin:digits", "--policy", policy,
                 "--out", tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_bad_input_is_exit_2(policy, tmp_path):
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not a model")
    assert check(tmp_path / "missing.onnx", "--dataset", "builtin:digits",
                 "--policy", policy).returncode == 2
    refused = check(garbage, "--dataset", "builtin:digits", "--policy", policy,
                    "--out", tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert check(garbage, "--dataset", "builtin:mnist", "--policy", policy,
                 "--out", tmp_path).returncode == 2


def test_an_analysis_that_fails_on_bad_input_is_exit_2_naming_the_partial_report(models,
                                                                                  tmp_path):
    """projection's k is too large for 20 samples; the probe's report still stands."""
    policy = tmp_path / "k.yaml"
    policy.write_text(POLICY.replace("max_samples: 300", "max_samples: 20")
                      .replace("method: pca}", "method: pca, k: 15}"))
    done = check(models["good"], "--dataset", "builtin:digits", "--policy", policy,
                 "--out", tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "projection failed" in done.stderr and str(tmp_path / "report.html") in done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert "test_accuracy" in report["analyses"]["linear_probe"]["layers"][-1]


def test_an_unreachable_server_is_exit_3(models, policy, tmp_path):
    done = check(models["good"], "--dataset", "builtin:digits", "--policy", policy,
                 "--server", f"http://127.0.0.1:{launch.free_port()}", "--out", tmp_path,
                 timeout=300)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "infrastructure" in done.stderr


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[launch.Service]:
    """One embedded service (API and worker) for this module's tests through the server."""
    with launch.embedded(tmp_path_factory.mktemp("service")) as running:
        yield running


def test_through_the_service_good_passes_and_damaged_fails(models, policy, service, tmp_path):
    good = check(models["good"], "--dataset", "builtin:digits", "--policy", policy,
                 "--server", service.url, "--out", tmp_path / "good",
                 "--junit", tmp_path / "good.xml", "--summary", tmp_path / "good.md")
    assert good.returncode == 0, good.stdout + good.stderr
    assert _junit_failures(tmp_path / "good.xml") == (2, 0)
    summary = (tmp_path / "good.md").read_text()
    assert f"{service.url}/v1/jobs/" in summary and "/artifacts/" in summary
    report = json.loads((tmp_path / "good" / "report.json").read_text())
    assert set(report["analyses"]) == {"linear_probe", "projection"}
    damaged = check(models["damaged"], "--dataset", "builtin:digits", "--policy", policy,
                    "--server", service.url, "--out", tmp_path / "damaged")
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr


def test_min_cka_to_baseline_through_the_service(models, cka_policy, service, tmp_path):
    """Both models uploaded, the job compares them (compare_to); the good one as torch's
    default exporter writes it, f.onnx beside f.onnx.data, which goes in its upload."""
    server = ("--server", service.url)
    good = _cka_check(models["with_data"], models["baseline"], cka_policy, tmp_path / "good",
                      *server)
    damaged = _cka_check(models["damaged"], models["baseline"], cka_policy,
                         tmp_path / "damaged", *server)
    _assert_cka_verdicts(good, damaged, tmp_path)
