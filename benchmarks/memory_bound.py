"""Peak memory of ``layerlens analyze`` on activations four times the memory budget.

Model: a residual CNN of 307 layers (:class:`tests.memory_tools.DeepCNN`, 3 stages of 25
blocks, width 16) on (3, 32, 96) images, 500 samples: 8.3 MiB of activations per
sample, 4.2 GB in all, against ``--memory-budget 1GB``. Three analyses (linear probe,
projection, mutual information). Peak: the whole process tree (the command and its
child), as :func:`tests.memory_tools.tree_peak` measures it. Baseline, in the same run:
the same command on 10 samples, the fixed overhead (interpreter, torch, onnxruntime, the
model, rendering). Target: peak <= budget + overhead.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tests.memory_tools import analyze_command, export_cnn, tree_peak, write_dataset

INPUT_SHAPE = (3, 32, 96)
N_SAMPLES = 500
BUDGET_MB = 1024
ANALYSES = "linear_probe,projection,mutual_information"


def run() -> dict[str, float]:
    """``{"overhead", "peak", "seconds"}``: MiB, MiB, wall seconds of the full run."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        model = export_cnn(folder / "cnn.onnx", INPUT_SHAPE, width=16, stages=3, blocks=25)
        data = write_dataset(folder / "data.npz", N_SAMPLES, INPUT_SHAPE)
        options = ["--memory-budget", f"{BUDGET_MB}MB", "--analyses", ANALYSES]
        tiny = tree_peak(analyze_command(model, data, folder / "tiny", *options,
                                         "--max-samples", "10"))
        start = time.perf_counter()
        full = tree_peak(analyze_command(model, data, folder / "full", *options))
        seconds = time.perf_counter() - start
        for result in (tiny, full):
            if result.returncode:
                raise RuntimeError(result.stderr.strip().splitlines()[-1])
    return {"overhead": tiny.bound / 1024**2, "peak": full.bound / 1024**2,
            "seconds": seconds}


def main() -> None:
    print(f"memory bound: 307-layer CNN, {N_SAMPLES} x {INPUT_SHAPE}, 4.2 GB of activations, "
          f"--memory-budget {BUDGET_MB}MB, {ANALYSES}")
    row = run()
    limit = BUDGET_MB + row["overhead"]
    print(f"{'overhead MiB':>12} {'peak MiB':>9} {'budget+overhead':>16} {'seconds':>8}")
    print(f"{row['overhead']:>12.0f} {row['peak']:>9.0f} {limit:>16.0f} {row['seconds']:>8.0f}"
          f"  {'ok' if row['peak'] <= limit else 'OVER'}")
