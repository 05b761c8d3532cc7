"""What the corpus test asserts of each model, shared with ``python -m tests.corpus.report``.

Each check raises AssertionError (or the engine's error) with what went wrong; a check
that returns means the model passed it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from layerlens.analyze import analyze
from layerlens.data import resolve_dataset
from layerlens.models import ProbedModel, load_model
from layerlens.options import JobOptions
from tests.corpus.builders import N_SAMPLES, Case

GRADIENT_FREE = [{"kind": "linear_probe"}, {"kind": "projection", "method": "pca"},
                 {"kind": "mutual_information"}]
#: per kind, the numbers every computed layer row must carry, finite
NUMBERS = {"linear_probe": ("train_accuracy", "test_accuracy"),
           "projection": ("neighborhood_hit", "trustworthiness"),
           "mutual_information": ("I_XT", "I_TY")}
#: the label is a function of the input: some layer must carry it (chance is about 0.5,
#: 0.33 for the 3-class MLP)
MIN_BEST_PROBE = 0.75
ACT_MAX_STEPS = 3
#: activation maximisation runs on the first, a middle and the last layer
ACT_MAX_LAYERS = 3
#: the test's gradient-free run: every analysis renders a figure per layer, so on 2 cores
#: the test takes layers spread through the network and half the samples; the report
#: (``python -m tests.corpus.report``) runs every layer on all 300
TEST_LAYERS = 6
TEST_SAMPLES = 150


def load(case: Case) -> ProbedModel:
    """``load_model`` as ``layerlens analyze`` calls it: the dataset's sample shapes, and its
    arrays for the model's other inputs."""
    assert case.model is not None, case.export_error
    data = resolve_dataset(str(case.dataset))
    return load_model(case.model, sample_shapes=data.sample_shapes, device="cpu",
                      inputs=data.inputs)


def _under(name: str, path: str) -> bool:
    """``name`` is the module path ``path`` or a layer inside it."""
    return name == path or (name.startswith(path) and name[len(path)] in "./:#[ (")


def check_layers(case: Case, model: ProbedModel) -> list[str]:
    """Named layers, unique; module paths wherever the format records them."""
    names = [layer.name for layer in model.layers]
    assert names, f"{case.id}: no layers listed"
    assert all(isinstance(n, str) and n for n in names), f"{case.id}: unnamed layers"
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"{case.id}: layer names repeat: {duplicates[:5]}"
    missing = [p for p in case.module_paths if not any(_under(n, p) for n in names)]
    assert not missing, (f"{case.id}: no layer named by module path {missing}; "
                         f"names are like {names[:4]}")
    return names


def spread(names: list[str], count: int) -> list[str]:
    """``count`` layers evenly spaced through the forward order, the first and the last
    among them."""
    picks = np.linspace(0, len(names) - 1, num=min(count, len(names))).round().astype(int)
    return [names[i] for i in dict.fromkeys(picks.tolist())]


def run(case: Case, out: Path, analyses: list[dict[str, Any]], *,
        layers: list[str] | None = None, max_samples: int = N_SAMPLES) -> dict[str, Any]:
    """``analyze`` on the case into ``out`` (``layers``: default every layer; the first
    ``max_samples`` of the dataset, stratified); the ``report.json`` it wrote."""
    assert case.model is not None, case.export_error
    options = JobOptions(analyses=analyses, device="cpu", max_samples=max_samples,
                         layers=layers)
    analyze(case.model, str(case.dataset), out, options)
    document: dict[str, Any] = json.loads((out / "report.json").read_text())
    return document


def _computed(case: Case, kind: str, section: dict[str, Any]) -> list[dict[str, Any]]:
    """The section's computed layer rows; no failed analysis or layer, and not all skipped."""
    assert "failed" not in section, f"{case.id}: {kind} failed: {section['failed']}"
    rows = section["layers"]
    failed = [f"{row['layer']}: {row['failed']}" for row in rows if "failed" in row]
    assert not failed, f"{case.id}: {kind} failed on {len(failed)} layers, first {failed[0]}"
    skipped = [row for row in rows if "skipped" in row]
    assert all(row["skipped"] for row in skipped), f"{case.id}: {kind} skipped with no reason"
    computed = [row for row in rows if "skipped" not in row]
    assert computed, (f"{case.id}: {kind} computed no layer"
                      + (f" (first skipped: {skipped[0]})" if skipped else ""))
    return computed


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_gradient_free(case: Case, report: dict[str, Any]) -> None:
    """Every gradient-free analysis computed layers with finite numbers; a probe finds the
    label somewhere."""
    for kind, keys in NUMBERS.items():
        for row in _computed(case, kind, report["analyses"][kind]):
            bad = {key: row.get(key) for key in keys if not _finite(row.get(key))}
            assert not bad, f"{case.id}: {kind} on {row['layer']}: not finite {bad}"
            floats = {k: v for k, v in row.items() if isinstance(v, float) and not _finite(v)}
            assert not floats, f"{case.id}: {kind} on {row['layer']}: not finite {floats}"
    probes = _computed(case, "linear_probe", report["analyses"]["linear_probe"])
    best = max(probes, key=lambda row: row["test_accuracy"])
    assert best["test_accuracy"] >= MIN_BEST_PROBE, (
        f"{case.id}: the best probe reaches {best['test_accuracy']:.2f} ({best['layer']}); "
        "the label is a function of the input")


ACT_MAX = [{"kind": "activation_maximization", "steps": ACT_MAX_STEPS, "max_units": 1}]


def check_act_max(case: Case, report: dict[str, Any]) -> None:
    """On a continuous input, activation maximisation optimised an input for some layer with
    finite numbers, and failed on none (a layer the operators rule out is skipped with the
    reason). On token ids it may only skip, with the reason, or run in the embedding space."""
    kind = "activation_maximization"
    section = report["analyses"][kind]
    assert "failed" not in section, f"{case.id}: {kind} failed: {section['failed']}"
    rows = section["layers"]
    failed = [f"{row['layer']}: {row['failed']}" for row in rows if "failed" in row]
    assert not failed, f"{case.id}: {kind} failed on {len(failed)} layers, first {failed[0]}"
    assert all(row["skipped"] for row in rows if "skipped" in row), \
        f"{case.id}: {kind} skipped with no reason"
    done = [row for row in rows if "skipped" not in row]
    if case.continuous:
        assert done, (f"{case.id}: {kind} ran on no layer "
                      f"(first skipped: {rows[0] if rows else 'no rows'})")
    for row in done:
        assert row["units"], f"{case.id}: {kind} on {row['layer']}: no units"
        for unit in row["units"]:
            values = (unit["activation"], unit["dataset_max_activation"])
            assert all(map(_finite, values)), f"{case.id}: {kind} on {row['layer']}: {unit}"
