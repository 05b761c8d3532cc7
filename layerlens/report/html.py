"""The HTML report page: HTML, CSS and one small inline script; images as relative links.

The page template includes each analysis section as ``analyses/<kind>.html``,
which resolves to the template its registry entry names.

Scale: the page opens with a table of contents; per-layer charts wrap into rows of
at most 40 layers (:mod:`layerlens.report.plots`); projections and activation
maximisation are grids of small multiples, each captioned with the layer's index
and linked to its row of details; every ``<img>`` is ``loading="lazy"``. Projection
points are embedded (:mod:`layerlens.report.interactive`) and drawn by a small inline
script that names a point's sample and class on hover; the page requests nothing
beyond its own artifacts. Size bound: the HTML itself (images excluded) stays under
:data:`MAX_HTML_BYTES` for 400 layers (tests/test_report_scale.py).
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FunctionLoader, PackageLoader, select_autoescape

from layerlens.analyses.registry import REGISTRY
from layerlens.report.interactive import as_script_json, projection_points
from layerlens.report.schema import Report

_PREFIX = "analyses/"
#: The page's HTML (images and other artifacts excluded) for a 400-layer report, at most.
MAX_HTML_BYTES = 2_000_000


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


def render_html(report: Report, root: Path | None = None) -> str:
    """The report page; ``<img src>`` paths are the report's artifact names.

    ``root``: the report's folder; with it, projections are interactive (their
    coordinates are read from there and embedded), without it plain pictures.
    """
    ops = {layer.name: layer.op for layer in report.model.layers}
    titles = {kind.name: kind.title for kind in REGISTRY}
    section = report.analyses.get("projection")
    points = None if root is None or not section or "layers" not in section else (
        projection_points(section, root))
    return _env.get_template("report.html").render(
        report=report, ops=ops, titles=titles, points=points,
        points_json=None if points is None else as_script_json(points))


def write_html(report: Report, path: Path) -> None:
    """``report.html`` at ``path``, in the report's folder (its artifacts beside it)."""
    path.write_text(render_html(report, path.parent), encoding="utf-8")
