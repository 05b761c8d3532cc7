"""What ``layerlens check`` writes: a table on stdout, JUnit XML, a Markdown job summary."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

from layerlens_client.check.evaluate import Outcome


def table(outcomes: Sequence[Outcome]) -> str:
    rows = [("rule", "layer", "value", "threshold", "verdict")] + [
        (o.rule, o.layer, f"{o.value:.4f}", o.threshold, o.verdict) for o in outcomes]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append(verdict(outcomes))
    return "\n".join(lines)


def verdict(outcomes: Sequence[Outcome]) -> str:
    """One line: how many passed and failed, and which rule failed at which layer."""
    failed = [o for o in outcomes if not o.passed]
    layers: dict[str, list[str]] = {}
    for outcome in failed:
        layers.setdefault(outcome.rule, []).append(outcome.layer)
    where = "; ".join(f"{rule} at {', '.join(names)}" for rule, names in layers.items())
    return f"{len(outcomes) - len(failed)} passed, {len(failed)} failed" + (
        f": {where}" if where else "")


def junit(outcomes: Sequence[Outcome], path: Path, *, suite: str, seconds: float) -> None:
    """One test case per rule and layer; a failing one carries a <failure> with the numbers."""
    failures = sum(not o.passed for o in outcomes)
    root = ET.Element("testsuites", name="layerlens check", tests=str(len(outcomes)),
                      failures=str(failures), errors="0", time=f"{seconds:.3f}")
    node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(outcomes)),
                         failures=str(failures), errors="0", skipped="0", time=f"{seconds:.3f}")
    for outcome in outcomes:
        case = ET.SubElement(node, "testcase", classname=f"layerlens.{outcome.metric}",
                             name=f"{outcome.rule} [{outcome.layer}]", time="0")
        if not outcome.passed:
            failure = ET.SubElement(case, "failure", type="RuleFailed",
                                    message=f"{outcome.metric} at {outcome.layer} = "
                                            f"{outcome.value:.4f}, needs {outcome.threshold}")
            failure.text = f"value {outcome.value!r}; threshold {outcome.threshold}"
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def summary(outcomes: Sequence[Outcome], path: Path, *, title: str,
            image_url: Callable[[str], str], report_url: str | None) -> None:
    """A Markdown summary (e.g. for ``$GITHUB_STEP_SUMMARY``) with the rules' images linked."""
    failed = [o for o in outcomes if not o.passed]
    head = "❌ failed" if failed else "✅ passed"
    lines = [f"## layerlens check: {head}", "", title, ""]
    if report_url:
        lines += [f"Report: [{report_url}]({report_url})", ""]
    lines += ["| rule | layer | value | threshold | verdict |", "| --- | --- | ---: | --- | --- |"]
    lines += [f"| {o.rule} | `{o.layer}` | {o.value:.4f} | {o.threshold} | "
              f"{'✅ pass' if o.passed else '❌ FAIL'} |" for o in outcomes]
    images = list(dict.fromkeys(o.image for o in outcomes if o.image))
    if images:
        lines += ["", "### Figures", ""]
        lines += [f"- [{name}]({image_url(name)})" for name in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
