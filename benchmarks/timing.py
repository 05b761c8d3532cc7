"""Side-by-side timing: baseline and candidate alternate, so drift hits both alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def _seconds(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def paired_medians(baseline: Callable[[], object], candidate: Callable[[], object], *,
                   repeats: int = 30, warmup: int = 10) -> tuple[float, float]:
    """Median seconds of ``baseline`` and ``candidate``, run alternately after warm-up."""
    for _ in range(warmup):
        baseline()
        candidate()
    base, cand = [], []
    for _ in range(repeats):
        base.append(_seconds(baseline))
        cand.append(_seconds(candidate))
    return statistics.median(base), statistics.median(cand)
