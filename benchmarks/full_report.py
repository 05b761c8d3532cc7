"""A full report (all four analyses, every layer) of the small digits CNN.

Target: under 60 s on a 2-core machine, per format. The baseline printed
beside it is the capture alone, measured in the same run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from app.demo.model import (
    DIGITS_SHAPE,
    digits_cnn,
    export_onnx,
    export_torchscript,
    train_classifier,
)
from layerlens.analyze import analyze
from layerlens.data import resolve_dataset
from layerlens.options import JobOptions

TARGET_SECONDS = 60.0


def main() -> None:
    digits = resolve_dataset("builtin:digits")
    train, _ = digits.split(seed=0)
    model = train_classifier(digits_cnn(), digits.x.reshape(-1, *DIGITS_SHAPE)[train],
                             digits.y[train], seconds=3.0, seed=0)
    print(f"full report: digits CNN (11 layers), builtin:digits ({digits.n_samples} samples), "
          "all four analyses with default parameters, CPU")
    print(f"{'format':<12} {'capture s':>9} {'report s':>9}  target < {TARGET_SECONDS:.0f} s")
    with tempfile.TemporaryDirectory() as folder:
        files = {"onnx": export_onnx(model, Path(folder) / "cnn.onnx", DIGITS_SHAPE),
                 "torchscript": export_torchscript(model, Path(folder) / "cnn.pt")}
        for fmt, path in files.items():
            start = time.perf_counter()
            analyze(path, digits, Path(folder) / f"capture-{fmt}", JobOptions(analyses=[]))
            capture = time.perf_counter() - start
            start = time.perf_counter()
            analyze(path, digits, Path(folder) / f"report-{fmt}", JobOptions())
            report = time.perf_counter() - start
            verdict = "ok" if report < TARGET_SECONDS else "MISSED"
            print(f"{fmt:<12} {capture:9.1f} {report:9.1f}  {verdict}")
