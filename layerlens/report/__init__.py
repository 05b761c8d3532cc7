"""Report schema, PNG figures and the HTML page."""

from layerlens.report.html import render_html, write_html
from layerlens.report.schema import Report

__all__ = ["Report", "render_html", "write_html"]
