"""The HTML report page: plain HTML and CSS, images as relative links."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from layerlens.report.schema import Report

_env = Environment(loader=PackageLoader("layerlens.report", "templates"),
                   autoescape=select_autoescape(["html"]))


def render_html(report: Report) -> str:
    """The report page; ``<img src>`` paths are the report's artifact names."""
    ops = {layer.name: layer.op for layer in report.model.layers}
    return _env.get_template("report.html").render(report=report, ops=ops)


def write_html(report: Report, path: Path) -> None:
    path.write_text(render_html(report), encoding="utf-8")
