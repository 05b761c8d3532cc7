"""Rules against a report: one :class:`Outcome` per rule and layer."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any

from layerlens_client.check.policy import Policy, PolicyError, Rule


@dataclass(frozen=True)
class Outcome:
    rule: str
    metric: str
    layer: str
    value: float
    threshold: str
    passed: bool
    image: str | None = None  # the artifact that shows this metric, if any

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "FAIL"


def _layer_names(report: dict[str, Any]) -> list[str]:
    return [layer["name"] for layer in report.get("model", {}).get("layers", [])]


def resolve_layers(rule: Rule, report: dict[str, Any]) -> list[str]:
    """The layer names a rule applies to, in forward order; PolicyError naming what is missing."""
    names = _layer_names(report)
    if not names:
        raise PolicyError("the report lists no layers")
    if rule.layers is not None:
        chosen = [n for n in names if fnmatch.fnmatchcase(n, rule.layers)]
        if not chosen:
            raise PolicyError(f"rule '{rule.title}': no layer matches '{rule.layers}' "
                              f"(layers: {', '.join(names)})")
        return chosen
    if rule.layer == "last":
        return [names[-1]]
    if rule.layer == "last_hidden":
        if len(names) < 2:
            raise PolicyError(f"rule '{rule.title}': the model has no hidden layer")
        return [names[-2]]
    if rule.layer not in names:
        raise PolicyError(f"rule '{rule.title}': the report has no layer '{rule.layer}' "
                          f"(layers: {', '.join(names)})")
    return [str(rule.layer)]


def _section(report: dict[str, Any], kind: str, rule: Rule) -> dict[str, Any]:
    section = report.get("analyses", {}).get(kind)
    if section is None:
        raise PolicyError(f"rule '{rule.title}': the report has no {kind} analysis "
                          f"(it has: {', '.join(report.get('analyses', {})) or 'none'})")
    return section


def metric_value(report: dict[str, Any], rule: Rule, layer: str, *,
                 which: str = "report") -> tuple[float, str | None]:
    """(value, image) of ``rule.metric`` at ``layer``; PolicyError when the report lacks it."""
    section = _section(report, rule.kind, rule)
    entry = next((e for e in section.get("layers", []) if e.get("layer") == layer), None)
    if entry is None:
        raise PolicyError(f"rule '{rule.title}': the {which}'s {rule.kind} section has no "
                          f"layer '{layer}' (was it selected for this analysis?)")
    value = entry.get(rule.field)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        known = sorted(k for k, v in entry.items() if isinstance(v, (int, float))
                       and not isinstance(v, bool))
        raise PolicyError(f"rule '{rule.title}': {rule.kind} has no numeric metric "
                          f"'{rule.field}' (it has: {', '.join(known)})")
    image = entry.get("image") or section.get("image")
    return float(value), image if isinstance(image, str) else None


def _section_value(report: dict[str, Any], path: str, rule: Rule) -> float:
    kind, field = path.split(".", 1)
    value = _section(report, kind, rule).get(field)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise PolicyError(f"rule '{rule.title}': the {kind} section has no number '{field}'")
    return float(value)


def cka_outcome(report: dict[str, Any], rule: Rule, layer: str, bound: float) -> Outcome:
    """``rule.min_cka_to_baseline`` (``bound``) at ``layer``: its CKA to the baseline's
    layer of the same name (or, when the baseline has none, to its best match) in the
    report's similarity section, which must compare with a baseline (``compare_to``). An
    undefined CKA (a constant layer) fails, with the reason."""
    section = _section(report, "similarity", rule)
    if not section.get("compared_to"):
        raise PolicyError(f"rule '{rule.title}': the report's similarity analysis compares the "
                          "model with itself; min_cka_to_baseline needs one run with "
                          "compare_to (layerlens check --baseline-model FILE)")
    names_a, names_b = section["layers_a"], section["layers_b"]
    if layer not in names_a:
        raise PolicyError(f"rule '{rule.title}': the similarity section has no layer '{layer}' "
                          "(was it selected for this analysis?)")
    counterpart: str | None = layer
    how = ""
    if layer not in names_b:
        best = {m["layer"]: m["match"] for m in section.get("best_matches") or []}
        counterpart, how = best.get(layer), ", best match: no layer of that name"
    value = (None if counterpart is None
             else section["matrix"][names_a.index(layer)][names_b.index(counterpart)])
    threshold = f">= {bound:g} vs baseline '{counterpart}'{how}"
    if value is None:
        reasons = [u["reason"] for u in section.get("undefined", [])
                   if (u["model"], u["layer"]) in {("a", layer), ("b", counterpart)}]
        threshold += f"; CKA undefined: {reasons[0] if reasons else 'not computed'}"
    image = section.get("image")
    return Outcome(rule=rule.title, metric=rule.metric, layer=layer,
                   value=math.nan if value is None else float(value), threshold=threshold,
                   passed=value is not None and value >= bound,
                   image=image if isinstance(image, str) else None)


def evaluate(policy: Policy, report: dict[str, Any],
             baseline: dict[str, Any] | None = None) -> list[Outcome]:
    """Every rule at every layer it names. Raises PolicyError before judging anything."""
    if policy.needs_baseline and baseline is None:
        raise PolicyError("a rule uses max_drop, which compares with a baseline: pass "
                          "--baseline REPORT.json (e.g. the report.json of main's last run)")
    outcomes = []
    for rule in policy.rules:
        for layer in resolve_layers(rule, report):
            if rule.min_cka_to_baseline is not None:
                outcomes.append(cka_outcome(report, rule, layer, rule.min_cka_to_baseline))
                continue
            value, image = metric_value(report, rule, layer)
            checks: list[tuple[str, bool]] = []
            if rule.min is not None:
                checks.append((f">= {rule.min:g}", value >= rule.min))
            if rule.max is not None:
                checks.append((f"<= {rule.max:g}", value <= rule.max))
            if rule.min_fraction_of is not None and rule.fraction is not None:
                bound = rule.fraction * _section_value(report, rule.min_fraction_of, rule)
                checks.append((f">= {rule.fraction:g} x {rule.min_fraction_of.split('.')[1]} "
                               f"= {bound:.4g}", value >= bound))
            if rule.max_drop is not None and baseline is not None:
                before, _ = metric_value(baseline, rule, layer, which="baseline")
                checks.append((f">= baseline {before:.4g} - {rule.max_drop:g}",
                               value >= before - rule.max_drop))
            outcomes.append(Outcome(rule=rule.title, metric=rule.metric, layer=layer,
                                    value=value, threshold="; ".join(c for c, _ in checks),
                                    passed=all(ok for _, ok in checks), image=image))
    return outcomes
