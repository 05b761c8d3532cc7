"""Two reports side by side: every number of every analysis, both values and the difference.

Used by ``layerlens compare REPORT_A REPORT_B`` and ``GET /v1/jobs/{id}/compare/{other_id}``,
which return the same document (torch-free: it reads report JSON only)::

    {"a": {"source": "runs/main/report.json",          # the CLI's path, or "job <id>"
           "model": {"sha256": "...", "format": "onnx"},
           "dataset": {"ref": "builtin:digits", "n_samples": 300}},
     "b": {...},
     "layers": {"common": ["conv1", ...],               # forward order of a
                "only_a": [...], "only_b": [...]},
     "sections": {
       "activations": [...],                            # the capture summary
       "linear_probe": [                                # each analysis either report has
         {"layer": "conv1", "metric": "test_accuracy", "a": 0.91, "b": 0.84,
          "difference": -0.07},                         # b - a
         {"layer": null, "metric": "n_train", "a": 240, "b": 240, "difference": 0},
         ...]}}

A row is one number: ``layer`` null for a number of the section itself (``metric`` a dotted
path such as ``plan.steps``), else a number of that layer's entry in any list of per-layer
entries (``layers``; other lists prefix their name, e.g. ``best_matches.cka``). Layers and
the items of nested lists are matched by name (``layer``), or by their ``unit``, ``index``
or ``step``, else by position (``units[3].activation``). The similarity matrix gives one row
per layer of ``layers_a`` and layer of ``layers_b``, matched by both names
(``matrix[fc1]``). A number only one report has keeps the other side and the difference
null. Booleans, text and lists of bare numbers (shapes, ranges) are not compared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Fields that name an item of a list, in order of preference, when items have no ``layer``.
ITEM_KEYS = ("unit", "index", "step")

Key = tuple[str | None, str]  # (layer or None, metric path)


class ComparisonError(ValueError):
    """A report cannot be read or is not a layerlens report (one line)."""


def load_report(path: Path) -> dict[str, Any]:
    """The report at ``path``: a ``report.json`` or a report folder holding one."""
    file = path / "report.json" if path.is_dir() else path
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ComparisonError(f"cannot read the report {file}: {exc}") from exc
    if not isinstance(report, dict) or not isinstance(report.get("analyses"), dict):
        raise ComparisonError(f"{file} is not a layerlens report.json (no analyses)")
    return report


def compare_reports(a: dict[str, Any], b: dict[str, Any], *, source_a: str,
                    source_b: str) -> dict[str, Any]:
    """The comparison document (module docstring) of report ``a`` with report ``b``."""
    layers_a, layers_b = _layer_names(a), _layer_names(b)
    in_a, in_b = set(layers_a), set(layers_b)
    sections_a, sections_b = _sections(a), _sections(b)
    return {
        "a": _describe(a, source_a),
        "b": _describe(b, source_b),
        "layers": {"common": [n for n in layers_a if n in in_b],
                   "only_a": [n for n in layers_a if n not in in_b],
                   "only_b": [n for n in layers_b if n not in in_a]},
        "sections": {kind: _rows(_numbers(sections_a.get(kind)), _numbers(sections_b.get(kind)))
                     for kind in dict.fromkeys([*sections_a, *sections_b])},
    }


def _describe(report: dict[str, Any], source: str) -> dict[str, Any]:
    model, dataset = report.get("model") or {}, report.get("dataset") or {}
    return {"source": source,
            "model": {"sha256": model.get("sha256"), "format": model.get("format")},
            "dataset": {"ref": dataset.get("ref"), "n_samples": dataset.get("n_samples")}}


def _layer_names(report: dict[str, Any]) -> list[str]:
    return [str(layer.get("name")) for layer in (report.get("model") or {}).get("layers", [])
            if isinstance(layer, dict)]


def _sections(report: dict[str, Any]) -> dict[str, Any]:
    activations = report.get("activations")
    return {**({"activations": activations} if isinstance(activations, dict) else {}),
            **report["analyses"]}


def _rows(a: dict[Key, float], b: dict[Key, float]) -> list[dict[str, Any]]:
    """One row per number of either side: a's order, then b's numbers a lacks."""
    rows = []
    for key in dict.fromkeys([*a, *b]):
        value_a, value_b = a.get(key), b.get(key)
        rows.append({"layer": key[0], "metric": key[1], "a": value_a, "b": value_b,
                     "difference": None if value_a is None or value_b is None
                     else value_b - value_a})
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(section: Any) -> dict[Key, float]:
    """Every number of an analysis section, by (layer, metric path)."""
    found: dict[Key, float] = {}
    if not isinstance(section, dict):
        return found
    matrix, names_a, names_b = (section.get(k) for k in ("matrix", "layers_a", "layers_b"))
    if isinstance(matrix, list) and isinstance(names_a, list) and isinstance(names_b, list):
        for name_a, row in zip(names_a, matrix, strict=False):
            for name_b, value in zip(names_b, row, strict=False):
                if _is_number(value):
                    found[(str(name_a), f"matrix[{name_b}]")] = value
        section = {k: v for k, v in section.items() if k != "matrix"}
    for field, value in section.items():
        if _is_layer_list(value):
            prefix = "" if field == "layers" else f"{field}."
            for entry in value:
                layer = str(entry["layer"])
                for path, number in _walk({k: v for k, v in entry.items() if k != "layer"}):
                    found[(layer, prefix + path)] = number
        else:
            for path, number in _walk(value, field):
                found[(None, path)] = number
    return found


def _is_layer_list(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(item, dict) and "layer" in item for item in value))


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """(dotted path, number) of every number in ``value`` (module docstring's rules)."""
    if _is_number(value):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        name = next((k for k in ("layer", *ITEM_KEYS) if all(k in item for item in value)),
                    None)
        for position, item in enumerate(value):
            label = position if name is None else item[name]
            rest = item if name is None else {k: v for k, v in item.items() if k != name}
            yield from _walk(rest, f"{path}[{label}]")
