"""The engine's public interface is typed: mypy sees through the lazy exports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = '''
from layerlens.analyses.base import AnalysisContext
import layerlens


def misuse(ctx: AnalysisContext) -> None:
    ctx.model.no_such_method()
    layerlens.load_model("model.onnx").nope()
    layerlens.JobOptions(batch_size="many").batch_size + 1
'''


@pytest.mark.slow
def test_mypy_finds_misuse_of_the_probed_model_through_the_lazy_exports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"),
                           "--config-file", str(ROOT / "pyproject.toml"), str(probe)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert '"ProbedModel" has no attribute "no_such_method"' in done.stdout, done.stdout
    assert '"ProbedModel" has no attribute "nope"' in done.stdout, done.stdout
    assert 'Argument "batch_size" to "JobOptions" has incompatible type "str"' in done.stdout
