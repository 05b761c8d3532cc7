"""The HTML report page: plain HTML and CSS, images as relative links.

The page template includes each analysis section as ``analyses/<kind>.html``,
which resolves to the template its registry entry names.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FunctionLoader, PackageLoader, select_autoescape

from layerlens.analyses.registry import REGISTRY
from layerlens.report.schema import Report

_PREFIX = "analyses/"


def _analysis_template(name: str) -> tuple[str, str, None] | None:
    """``analyses/<kind>.html`` -> the kind's template file (reloaded when it changes)."""
    kind = name.removeprefix(_PREFIX).removesuffix(".html")
    if not name.startswith(_PREFIX) or kind not in REGISTRY:
        return None
    path = Path(REGISTRY[kind].template)
    return path.read_text(encoding="utf-8"), str(path), None


_env = Environment(loader=ChoiceLoader([PackageLoader("layerlens.report", "templates"),
                                        FunctionLoader(_analysis_template)]),
                   autoescape=select_autoescape(["html"]))


def render_html(report: Report) -> str:
    """The report page; ``<img src>`` paths are the report's artifact names."""
    ops = {layer.name: layer.op for layer in report.model.layers}
    titles = {kind.name: kind.title for kind in REGISTRY}
    return _env.get_template("report.html").render(report=report, ops=ops, titles=titles)


def write_html(report: Report, path: Path) -> None:
    path.write_text(render_html(report), encoding="utf-8")
