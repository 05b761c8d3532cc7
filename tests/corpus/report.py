"""``python -m tests.corpus.report``: the corpus figures, one row per model.

Builds the corpus (as the test does), then for each model times ``load_model`` and counts
the layers it lists, times ``analyze`` with the gradient-free analyses (linear probe, PCA
projection, mutual information) on the dataset's samples (300), runs activation
maximisation where the input is continuous, and says whether each check passes; a failing
check is named with its issue 12 class from ``tests.corpus.expected`` (or "new").
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from layerlens.errors import one_line
from tests.corpus import checks
from tests.corpus.builders import N_SAMPLES, Case, build_corpus
from tests.corpus.expected import KNOWN


def _error(exc: BaseException) -> str:
    return one_line(exc, limit=400)


def _class(check: str, case: Case, error: str) -> str:
    """``class N`` as ``tests/corpus/expected.py`` records it; ``new`` when it records none,
    ``(changed)`` when the error is not the one it records."""
    known = KNOWN.get((check, case.id))
    if known is None:
        return "new"
    label, _, recorded = known.removeprefix("issue 12 ").partition(": ")
    return label if recorded == error else f"{label} (changed)"


def measure(case: Case, folder: Path) -> dict[str, object]:
    """One row: load seconds, layers, analyze seconds, status and the failures."""
    row: dict[str, object] = {"id": case.id, "load_s": None, "layers": None,
                              "analyze_s": None, "analyze_cpu_s": None,
                              "best_probe": None, "failures": []}
    failures: list[tuple[str, str]] = row["failures"]  # type: ignore[assignment]
    if case.model is None:
        row["status"] = f"torch cannot export it: {case.export_error}"
        return row
    names: list[str] | None = None
    try:
        start = time.perf_counter()
        model = checks.load(case)
        row["load_s"] = time.perf_counter() - start
        row["layers"] = len(model.layers)
        names = [layer.name for layer in model.layers]
        checks.check_layers(case, model)
    except Exception as exc:
        failures.append(("load", _error(exc)))
    try:
        start, cpu = time.perf_counter(), time.process_time()
        report = checks.run(case, folder / "gradient_free", checks.GRADIENT_FREE)
        row["analyze_s"] = time.perf_counter() - start
        row["analyze_cpu_s"] = time.process_time() - cpu
        probes = report["analyses"]["linear_probe"].get("layers", [])
        row["best_probe"] = max((r["test_accuracy"] for r in probes if "test_accuracy" in r),
                                default=None)
        checks.check_gradient_free(case, report)
    except Exception as exc:
        failures.append(("analyses", _error(exc)))
    if names is not None:
        try:
            report = checks.run(case, folder / "act_max", checks.ACT_MAX,
                                layers=checks.spread(names, checks.ACT_MAX_LAYERS))
            checks.check_act_max(case, report)
        except Exception as exc:
            failures.append(("act_max", _error(exc)))
    else:
        failures.append(("act_max", failures[0][1]))
    row["status"] = "ok" if not failures else ", ".join(
        f"{check}: {_class(check, case, error)}" for check, error in failures)
    return row


def _seconds(value: object) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="case ids containing this text")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="layerlens-corpus-") as tmp:
        start = time.perf_counter()
        corpus = build_corpus(Path(tmp) / "corpus")
        print(f"corpus built in {time.perf_counter() - start:.1f} s "
              f"({len(corpus)} models, {N_SAMPLES} samples each)\n")
        rows = [measure(case, Path(tmp) / "runs" / case.id.replace("/", "_"))
                for case in corpus.values() if args.only in case.id]
    print("| model | load (s) | layers | gradient-free analyze: wall (s) | cpu (s) "
          "| best probe | status |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        layers = "-" if row["layers"] is None else str(row["layers"])
        best = "-" if row["best_probe"] is None else f"{row['best_probe']:.2f}"
        print(f"| {row['id']} | {_seconds(row['load_s'])} | {layers} | "
              f"{_seconds(row['analyze_s'])} | {_seconds(row['analyze_cpu_s'])} | {best} | "
              f"{row['status']} |")
    notes = [(case.id, case.note) for case in corpus.values() if case.note]
    failures = [(row["id"], check, error) for row in rows
                for check, error in row["failures"]]  # type: ignore[attr-defined]
    if notes:
        print("\nexports:")
        for case_id, note in notes:
            print(f"- {case_id}: {note}")
    if failures:
        print("\nfailures:")
        for case_id, check, error in failures:
            print(f"- {case_id} [{check}]: {error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
