"""The demo, as a real process: trains, exports both formats, reports every layer."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_prints_where_the_reports_are(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "layerlens", "demo", "--out", str(tmp_path), "--seconds", "2"],
        capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stderr
    accuracy = float(re.search(r"held-out accuracy: ([0-9.]+)", result.stdout).group(1))
    assert accuracy > 0.8
    for fmt in ("onnx", "torchscript"):
        page = tmp_path / f"report-{fmt}" / "report.html"
        assert f"{fmt}: 11 layers -> {page}" in result.stdout
        report = json.loads((page.parent / "report.json").read_text())
        layers = [layer["name"] for layer in report["model"]["layers"]]
        assert [a["layer"] for a in report["activations"]["layers"]] == layers
        assert len(layers) == 11
