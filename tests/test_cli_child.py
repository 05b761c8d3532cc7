"""``layerlens analyze`` runs the model in a child process: a crash is one line, not a signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _analysis_children(pid: int) -> list[int]:
    """The children of ``pid`` running the analysis (``python -m workers.runner``), not any
    short-lived helper process that the command may start first."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(child) for child in path.read_text().split()] if path.exists() else []
    found = []
    for child in children:
        try:
            command_line = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:  # gone already
            continue
        if b"workers.runner" in command_line:
            found.append(child)
    return found


def test_a_crash_of_the_model_runtime_is_one_line_naming_the_model(cnn_files, tmp_path):
    """SIGSEGV the analysis child mid-run, as onnxruntime crashing on a model would."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"analyses": [{"kind": "activation_maximization",
                                              "steps": 100000}]}))
    command = subprocess.Popen(
        [sys.executable, "-m", "app", "analyze", str(cnn_files["onnx"]), "--dataset",
         "builtin:digits", "--max-samples", "100", "--spec", str(spec), "--out",
         str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (children := _analysis_children(command.pid)):
        assert command.poll() is None and time.monotonic() < deadline, command.communicate()
        time.sleep(0.1)
    time.sleep(3)  # let it load the model and start
    os.kill(children[0], signal.SIGSEGV)
    out, err = command.communicate(timeout=60)
    assert command.returncode == 1, out + err
    assert err.strip().splitlines() == [
        f"layerlens: error: the analysis process crashed (SIGSEGV) while analysing "
        f"{cnn_files['onnx'].name}: the model's runtime failed on this file"]
    assert "Traceback" not in err


def test_bad_input_found_in_the_child_names_the_flag(cnn_files, tmp_path, capsys):
    """The child refuses the input in the engine's words (the field input_shape); the
    command line spells it as its flag."""
    from layerlens_client.cli import main

    status = main(["analyze", str(cnn_files["torchscript"]), "--dataset", "builtin:iris",
                   "--analyses", "linear_probe", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and "--input-shape" in err, err
