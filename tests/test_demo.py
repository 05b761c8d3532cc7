"""The demo, as a real process: trains, exports both formats, analyses them through HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from layerlens.spec import kinds


@pytest.mark.slow
def test_demo_goes_through_the_service_and_prints_where_the_reports_are(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "app", "demo", "--out", str(tmp_path), "--seconds", "2"],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    accuracy = float(re.search(r"held-out accuracy: ([0-9.]+)", result.stdout).group(1))
    assert accuracy > 0.8
    assert "starting the embedded service at http://127.0.0.1:" in result.stdout
    for fmt in ("onnx", "torchscript"):
        assert f"{fmt}: 11 layers" in result.stdout
        url = re.search(rf"{fmt}: report (http://127\.0\.0\.1:\d+/v1/jobs/\w+/report\.html)",
                        result.stdout)
        assert url, result.stdout
        folder = tmp_path / f"report-{fmt}"
        assert f"{fmt}: files  {folder.resolve()}" in result.stdout
        report = json.loads((folder / "report.json").read_text())
        layers = [layer["name"] for layer in report["model"]["layers"]]
        assert [a["layer"] for a in report["activations"]["layers"]] == layers
        assert len(layers) == 11
        assert set(report["analyses"]) == set(kinds())  # every registered kind
        assert (folder / "report.html").is_file()
        assert (folder / report["activations"]["image"]).is_file()
    assert re.search(r"series: dynamics report http://127\.0\.0\.1:\d+/v1/jobs/\w+/report\.html",
                     result.stdout), result.stdout
    series = json.loads((tmp_path / "report-series" / "report.json").read_text())
    dynamics = series["dynamics"]
    assert dynamics["steps"][0] == 0 and len(dynamics["steps"]) >= 2  # untrained, then trained
    assert len(dynamics["layers"]) == 11
    probe = dynamics["linear_probe"]["test_accuracy"]
    assert probe[-1][-1] > probe[0][-1]  # the output layer separates the classes after training
    assert (tmp_path / "report-series" / dynamics["mutual_information"]["image"]).is_file()
    assert "the service is stopped" in result.stdout
