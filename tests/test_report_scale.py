"""The report page at 400 layers: bounded HTML, readable per-layer charts, small multiples.

A real report of a small CNN (every chart-drawing analysis, cheap parameters) is widened to
400 layers by repeating its rows under new names; the per-layer charts are drawn again at
400 layers by the real figure functions, and the page is rendered. Checks: the HTML (images
excluded) stays under ``MAX_HTML_BYTES``; every per-layer chart wraps into rows at least
``MIN_ROW_PX`` tall, no chart is wider than ``MAX_WIDTH_PX`` and adjacent tick labels are at
least two label heights apart; every image is lazy; every in-page link has its target; the
page names no external URL; the embedded projection points map back to each point's sample,
class and coordinates.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from app.demo.model import digits_cnn, export_torchscript
from layerlens.analyses.linear_probe.figures import accuracy_figure
from layerlens.analyses.linear_probe.spec import ProbeLayer
from layerlens.analyses.mutual_information.figures import information_plane_figure
from layerlens.analyses.mutual_information.spec import InformationLayer
from layerlens.analyses.similarity.figures import heatmap_figure
from layerlens.analyze import analyze
from layerlens.options import JobOptions
from layerlens.report import Report, write_html
from layerlens.report.html import MAX_HTML_BYTES
from layerlens.report.interactive import MAX_POINTS_PER_LAYER, MAX_POINTS_TOTAL, SCALE
from layerlens.report.plots import (
    DPI,
    LAYERS_PER_ROW,
    MAX_WIDTH_PX,
    MIN_ROW_PX,
    activation_summary_png,
    layer_rows,
    plt,
)
from layerlens.spec import parse_spec

# about 40 s of CPU (most of it the small analysis and drawing 400-layer charts)
pytestmark = pytest.mark.slow

N_LAYERS = 400
N_POINTS = 1000
ANALYSES: list[dict[str, Any]] = [
    {"kind": "linear_probe"},
    {"kind": "projection", "method": "pca"},
    {"kind": "mutual_information"},
    {"kind": "activation_maximization", "steps": 2, "max_units": 2},
    {"kind": "similarity"},
]


def _widen(rows: list[dict[str, Any]], names: dict[str, list[str]]) -> list[dict[str, Any]]:
    """``rows`` (one per layer, key ``layer``) repeated, each copy under its new name."""
    cycle = itertools.cycle(rows)
    widened = []
    seen: dict[str, int] = {}
    for _ in range(N_LAYERS):
        row = dict(next(cycle))
        k = seen.get(row["layer"], 0)
        seen[row["layer"]] = k + 1
        if k >= len(names[row["layer"]]):
            break
        row["layer"] = names[row["layer"]][k]
        widened.append(row)
    return widened


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> tuple[Path, Report, float]:
    """``(folder, report, seconds to draw the charts and render)`` of the 400-layer report."""
    folder = tmp_path_factory.mktemp("scale")
    torch.manual_seed(0)
    model = export_torchscript(digits_cnn().eval(), folder / "cnn.pt")
    small = analyze(model, "builtin:digits", folder / "report",
                    JobOptions(analyses=parse_spec(ANALYSES), max_samples=80)).model_dump()
    base = [layer["name"] for layer in small["model"]["layers"]]
    repeats = -(-N_LAYERS // len(base))
    names = {name: [f"stage{r}.block{r * len(base) + i}.{name}" for r in range(repeats)]
             for i, name in enumerate(base)}
    layers = _widen([{**entry, "layer": entry["name"]} for entry in small["model"]["layers"]],
                    names)
    small["model"]["layers"] = [{key: row[key] for key in ("op", "shape")} | {
        "name": row["layer"]} for row in layers]
    small["activations"]["layers"] = _widen(small["activations"]["layers"], names)
    for section in small["analyses"].values():
        if isinstance(section.get("layers"), list):
            section["layers"] = _widen(section["layers"], names)
    similarity = small["analyses"]["similarity"]
    all_names = [row["name"] for row in small["model"]["layers"]]
    similarity["layers_a"] = similarity["layers_b"] = all_names
    rng = np.random.default_rng(0)
    matrix = rng.uniform(0, 1, (N_LAYERS, N_LAYERS))
    similarity["matrix"] = matrix.tolist()
    out = folder / "report"
    # projections of N_POINTS samples, so that the page holds the most points it ever draws
    projection = small["analyses"]["projection"]
    projection["n_points"], projection["sample_indices"] = N_POINTS, None
    np.save(out / projection["labels"], rng.integers(0, 10, N_POINTS))
    for name in {row["coordinates"] for row in projection["layers"]}:
        np.save(out / name, rng.normal(size=(N_POINTS, 2)).astype(np.float32))
    report = Report.model_validate(small)

    started = time.monotonic()
    ops = {row.name: row.op for row in report.model.layers}
    activation_summary_png(report.activations.layers, ops, out / report.activations.image)
    probe = report.analyses["linear_probe"]
    probed = [ProbeLayer.model_validate(row) for row in probe["layers"]
              if "test_accuracy" in row]
    _save(accuracy_figure(all_names, probed, probe["chance_accuracy"]), out / probe["image"])
    info = report.analyses["mutual_information"]
    _save(information_plane_figure(
        [InformationLayer.model_validate(row) for row in info["layers"] if "I_TY" in row],
        h_y=info["H_Y"],
        h_x=info["H_X"], log2_n=info["log2_N"], estimator=info["estimator"]),
        out / info["image"])
    _save(heatmap_figure(matrix, all_names, all_names, row_title="layer", col_title="layer",
                         value_label="CKA", title="CKA"), out / similarity["image"])
    write_html(report, out / "report.html")
    return out, report, time.monotonic() - started


def _save(figure: Any, path: Path) -> None:
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


class _Page(HTMLParser):
    """Every start tag of the page with its attributes, and the inline script texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: dict[str, str] = {}
        self._script: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs).get("id") or f"script{len(self.scripts)}"

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self.scripts[self._script] = self.scripts.get(self._script, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None


def _page(out: Path) -> tuple[bytes, _Page]:
    html = (out / "report.html").read_bytes()
    page = _Page()
    page.feed(html.decode("utf-8"))
    return html, page


def test_page_size_bound_and_render_time(wide):
    out, report, seconds = wide
    html, _ = _page(out)
    assert len(report.model.layers) == N_LAYERS
    assert len(report.analyses["projection"]["layers"]) == N_LAYERS
    assert len(html) < MAX_HTML_BYTES, f"{len(html):,} bytes of HTML at {N_LAYERS} layers"
    print(f"{N_LAYERS} layers: {len(html):,} bytes of HTML; charts and page in {seconds:.1f} s")


def test_per_layer_charts_wrap_into_readable_rows(wide):
    out, report, _ = wide
    n_rows = len(layer_rows(N_LAYERS))
    assert n_rows == -(-N_LAYERS // LAYERS_PER_ROW)
    for image in (report.activations.image, report.analyses["linear_probe"]["image"]):
        width, height = Image.open(out / image).size
        assert width <= MAX_WIDTH_PX, (image, width)
        assert height / n_rows >= MIN_ROW_PX, (image, height, n_rows)
    for image in (report.analyses["mutual_information"]["image"],
                  report.analyses["similarity"]["image"]):
        assert Image.open(out / image).size[0] <= MAX_WIDTH_PX, image


def test_tick_labels_do_not_crowd(wide):
    """Adjacent labelled ticks of a row are at least two label heights apart on the PNG."""
    _, report, _ = wide
    probe = report.analyses["linear_probe"]
    names = [row.name for row in report.model.layers]
    figure = accuracy_figure(names, [ProbeLayer.model_validate(row) for row in probe["layers"]
                                     if "test_accuracy" in row], probe["chance_accuracy"])
    try:
        axes = figure.get_axes()
        assert len(axes) == len(layer_rows(N_LAYERS))
        for ax in axes:
            ticks = ax.get_xticks()
            labels = [label for label in ax.get_xticklabels() if label.get_text()]
            assert 0 < len(labels) <= LAYERS_PER_ROW
            assert all(re.match(r"\d+: ", label.get_text()) for label in labels)
            pixels = ax.transData.transform(np.c_[ticks, np.zeros_like(ticks)])[:, 0]
            label_px = labels[0].get_fontsize() * DPI / 72
            assert np.diff(pixels).min() >= 2 * label_px, (np.diff(pixels).min(), label_px)
    finally:
        plt.close(figure)


def test_images_lazy_links_resolve_no_external_urls(wide):
    out, report, _ = wide
    html, page = _page(out)
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert images and all(attrs.get("loading") == "lazy" for attrs in images)
    ids = {attrs["id"] for _, attrs in page.tags if attrs.get("id")}
    links = [attrs["href"] or "" for tag, attrs in page.tags if tag == "a" and "href" in attrs]
    anchors = [link[1:] for link in links if link.startswith("#")]
    assert not [a for a in anchors if a not in ids], "links to missing anchors"
    # a table of contents, and one small multiple per layer linked to its details
    assert {kind for kind in report.analyses} <= set(anchors)
    for kind in ("projection", "activation_maximization"):
        cells = [i for i in ids if re.fullmatch(rf"{kind}-fig-\d+", i)]
        assert len(cells) == len(report.analyses[kind]["layers"]), kind
        assert all(f"{kind}-{cell.rsplit('-', 1)[1]}" in anchors for cell in cells)
    # nothing but the report's own artifacts: no scheme, no protocol-relative URL
    sources = [attrs.get("src") or "" for _, attrs in page.tags] + links
    assert not [s for s in sources if re.match(r"([a-z]+:|//)", s, re.I)]
    assert not [t for t, attrs in page.tags if t in ("link", "iframe", "object", "embed")]
    assert not [attrs for t, attrs in page.tags if t == "script" and attrs.get("src")]
    assert not re.search(rb"https?://", html.replace(b"http://www.w3.org/2000/svg", b""))
    for attrs in images:
        assert (out / str(attrs["src"])).is_file(), attrs["src"]


def test_embedded_points_are_each_samples(wide):
    """Every drawn point decodes to its sample's class and its own coordinates."""
    out, report, _ = wide
    _, page = _page(out)
    data = json.loads(page.scripts["projection-points"])
    section = report.analyses["projection"]
    labels = np.load(out / section["labels"])
    samples = np.asarray(data["samples"])
    per_layer = min(len(labels), MAX_POINTS_PER_LAYER, MAX_POINTS_TOTAL // N_LAYERS)
    assert len(samples) == per_layer
    assert len(data["layers"]) == N_LAYERS
    indices = (np.arange(len(labels)) if section["sample_indices"] is None
               else np.load(out / section["sample_indices"]))
    rows = np.array([list(indices).index(sample) for sample in samples])
    assert (indices[rows] == samples).all()
    assert data["labels"] == labels[rows].tolist()
    assert data["classes"] == section["class_names"]
    for position in ("0", str(N_LAYERS - 1)):
        xy = np.frombuffer(base64.b64decode(data["layers"][position]), np.uint8).reshape(-1, 2)
        coordinates = np.load(out / section["layers"][int(position)]["coordinates"])
        low, high = coordinates.min(axis=0), coordinates.max(axis=0)
        expected = (coordinates[rows] - low) / (high - low) * SCALE
        # tolerance 0.5: rounding to the integer grid; y is flipped for SVG
        assert np.abs(xy[:, 0] - expected[:, 0]).max() <= 0.5
        assert np.abs(xy[:, 1] - (SCALE - expected[:, 1])).max() <= 0.5
