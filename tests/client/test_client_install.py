"""``pip install ./client`` into a fresh virtual environment: light, and it works alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CLIENT = Path(__file__).resolve().parents[2] / "client"
HEAVY = {"torch", "numpy"}


def _run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
           and not k.startswith("LAYERLENS_")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_pip_install_client_into_a_fresh_venv(tmp_path: Path) -> None:
    # build from a copy, so the build leaves nothing (build/, *.egg-info) in the checkout
    source = tmp_path / "client"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))
    venv = tmp_path / "venv"
    # the project venv's interpreter is Python 3.11; `-m venv` builds on its base install
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert made.returncode == 0, made.stderr
    bin_dir = venv / "bin"
    installed = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q",
                      "--disable-pip-version-check", str(source)], tmp_path, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    imported = _run([str(bin_dir / "python"), "-c",
                     "import layerlens_client, sys; "
                     "assert 'torch' not in sys.modules and 'numpy' not in sys.modules; "
                     "print(layerlens_client.__version__)"], tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "0.1.0"

    listed = _run([str(bin_dir / "python"), "-m", "pip", "list", "--format=json",
                   "--disable-pip-version-check"], tmp_path)
    names = {entry["name"].lower() for entry in json.loads(listed.stdout)}
    assert "layerlens-client" in names and "httpx" in names and "pydantic" in names
    assert not names & HEAVY, names & HEAVY
    assert "layerlens" not in names

    refused = _run([str(bin_dir / "layerlens"), "analyze", "model.onnx"], tmp_path)
    assert refused.returncode == 2
    output = (refused.stdout + refused.stderr).strip()
    assert output == ("layerlens analyze needs the full layerlens package (pip install "
                      "layerlens); this is the light client, which offers: check")
