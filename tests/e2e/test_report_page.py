"""The report page in a real headless Chromium: served by the API and written by the CLI.

Every <img> is lazy and must load once asked to (``complete`` and ``naturalWidth > 0``),
every analysis section must show at least one image (projections: one interactive scatter
per layer), the key numbers of the report JSON must be visible as the templates format them,
no request may leave the page's own folder, hovering a projection point must name its sample
and class, and a full-page screenshot is kept (under the pytest tmp folder, and copied to
``$LAYERLENS_SCREENSHOT_DIR`` when that is set).

Without Chromium, chromedriver or selenium the tests are skipped with the reason, except
under ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from layerlens.analyze import analyze
from layerlens.options import JobOptions
from layerlens.report.interactive import SCALE
from layerlens.spec import parse_spec
from tests.e2e import browser
from tests.e2e.launch import embedded, wait_for_job


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


# Checked at collection, so a skip does not first train the session's CNN.
MISSING = browser.browser_missing()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(MISSING is not None and not _on_ci(), reason=MISSING or "")]

# Small parameters so a job takes seconds, but every analysis (so every section's images).
ANALYSES: list[dict[str, Any]] = [
    {"kind": "linear_probe"},
    {"kind": "projection", "method": "pca"},
    {"kind": "mutual_information"},
    {"kind": "activation_maximization", "steps": 32, "max_units": 2},
]
MAX_SAMPLES = 300
SECTIONS = ["activations", *(entry["kind"] for entry in ANALYSES)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    if MISSING is not None:  # only reached under CI=true: there a missing browser fails
        pytest.fail(f"CI=true and {MISSING}")
    with browser.headless_chromium() as chromium:
        yield chromium


def _last_probed(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    measured = [row for row in rows if key in row and row[key] is not None]
    assert measured, f"no layer has {key}: {rows}"
    return measured[-1]


def check_page(driver: Any, url: str, report: dict[str, Any], shot: Path) -> list[dict]:
    """Open ``url``; assert images, sections and numbers; save a full-page screenshot."""
    driver.get(url)
    lazy = driver.execute_script(
        "return Array.from(document.images).map(img => img.loading);")
    assert lazy and set(lazy) == {"lazy"}, lazy
    driver.execute_script(  # load every image now, not only those scrolled to
        "document.querySelectorAll('img').forEach(img => { img.loading = 'eager'; });")
    states = browser.wait_for_images(driver)
    assert states, f"no <img> on {url}"
    broken = [s for s in states if not (s["complete"] and s["naturalWidth"] > 0)]
    assert not broken, f"{len(broken)} of {len(states)} images did not load on {url}: {broken}"

    assert browser.section_ids(driver) == SECTIONS
    per_section = {section: [s for s in states if s["section"] == section]
                   for section in SECTIONS}
    empty = [section for section, found in per_section.items()
             if not found and section != "projection"]
    assert not empty, f"sections without an image: {empty}"
    assert not [s for s in states if s["section"] is None], "an image outside every section"
    # one plot each for activations, probes and MI; projections are interactive scatters
    # (their pictures are links); one grid per maximised layer plus one picture per unit
    counts = {section: len(found) for section, found in per_section.items()}
    analyses = report["analyses"]
    maximised = [r for r in analyses["activation_maximization"]["layers"] if "units" in r]
    assert counts == {
        "activations": 1, "linear_probe": 1, "mutual_information": 1, "projection": 0,
        "activation_maximization": sum(1 + len(r["units"]) for r in maximised),
    }, counts
    scatters = driver.execute_script("return document.querySelectorAll('svg.scatter').length;")
    assert scatters == len([r for r in analyses["projection"]["layers"] if "image" in r])
    assert scatters > 0
    assert maximised, analyses["activation_maximization"]

    # key numbers, formatted as the templates format them
    probe = _last_probed(report["analyses"]["linear_probe"]["layers"], "test_accuracy")
    cells = browser.row_cells(driver, "linear_probe", probe["layer"])
    assert f"{probe['test_accuracy']:.3f}" in cells, (probe, cells)
    assert f"{probe['train_accuracy']:.3f}" in cells, (probe, cells)
    assert probe["test_accuracy"] > 0.5, f"the trained CNN's last layer probes poorly: {probe}"

    info = _last_probed(report["analyses"]["mutual_information"]["layers"], "I_TY")
    cells = browser.row_cells(driver, "mutual_information", info["layer"])
    assert f"{info['I_TY']:.4f}" in cells, (info, cells)

    view = _last_probed(report["analyses"]["projection"]["layers"], "neighborhood_hit")
    cells = browser.row_cells(driver, "projection", view["layer"])
    assert f"{view['neighborhood_hit']:.3f}" in cells, (view, cells)

    text = driver.find_element("tag name", "body").text
    assert f"{report['dataset']['n_samples']} of" in text
    assert report["dataset"]["n_samples"] == MAX_SAMPLES
    assert report["model"]["sha256"][:12] in text

    assert browser.severe_console_messages(driver) == []
    stays_home(driver, url)

    browser.full_page_screenshot(driver, shot)
    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{shot} is not a PNG"
    assert len(data) > 10_000, f"{shot} is only {len(data)} bytes"
    keep = os.environ.get("LAYERLENS_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(keep) / shot.name)
    return states


def stays_home(driver: Any, url: str) -> None:
    """No URL with a scheme or host in the page, every request to the page's own folder."""
    source = driver.page_source.replace("http://www.w3.org/2000/svg", "")
    assert not re.search(r"(src|href)=\"([a-z]+:|//)", source, re.I), "an external URL"
    assert "http://" not in source and "https://" not in source
    folder = url.rsplit("/", 1)[0] + "/"
    # what the page fetched (a file:// page records nothing here; the served one its images)
    requested = driver.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name);")
    requested += driver.execute_script(
        "return Array.from(document.images).map(img => img.currentSrc);")
    away = [name for name in requested
            if not name.startswith(folder) and not name.endswith("/favicon.ico")]  # browser's
    assert not away, away


# The point on top at a circle's centre, whose tooltip the test then reads.
_TOP_POINT_JS = """
const svg = arguments[0];
for (const dot of svg.querySelectorAll('circle')) {
  const box = dot.getBoundingClientRect();
  if (document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2) === dot)
    return dot;
}
return null;
"""


def hover_names_the_point(driver: Any, out: Path, report: dict[str, Any]) -> str:
    """Hover a projection point; its tooltip names the sample and class the report's
    artifacts give for a point drawn where that circle is. Returns the tooltip."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    section = report["analyses"]["projection"]
    svg = driver.find_elements(By.CSS_SELECTOR, "svg.scatter")[-1]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", svg)
    WebDriverWait(driver, 10).until(lambda d: svg.find_elements(By.TAG_NAME, "circle"))
    dot = driver.execute_script(_TOP_POINT_JS, svg)
    assert dot is not None, "every drawn point is covered by another"
    ActionChains(driver).move_to_element(dot).perform()
    tip = driver.find_element(By.ID, "projection-tip")
    WebDriverWait(driver, 5).until(lambda d: tip.is_displayed())
    match = re.fullmatch(r"sample (\d+) · (.+)", tip.text.strip())
    assert match, tip.text
    sample, label = int(match[1]), match[2]

    labels = np.load(out / section["labels"])
    indices = (np.arange(len(labels)) if section["sample_indices"] is None
               else np.load(out / section["sample_indices"]))
    row = int(np.flatnonzero(indices == sample)[0])
    assert section["class_names"][labels[row]] == label, (sample, label)
    layer = section["layers"][int(svg.get_attribute("data-layer"))]
    xy = np.load(out / layer["coordinates"])
    unit = (xy[row] - xy.min(axis=0)) / (xy.max(axis=0) - xy.min(axis=0))
    drawn = np.array([float(dot.get_attribute("cx")), float(dot.get_attribute("cy"))])
    # tolerance 0.5: the page's 0..SCALE integer grid; SVG's y grows downward
    assert np.abs(drawn - [SCALE * unit[0], SCALE * (1 - unit[1])]).max() <= 0.5, (drawn, unit)
    return str(tip.text)


def test_served_report_page_loads_every_image(driver, cnn_files, tmp_path):
    started = time.monotonic()
    with embedded(tmp_path / "data") as service, service.client() as client:
        with Path(cnn_files["onnx"]).open("rb") as fh:
            model = client.post("/v1/models", files={"file": ("cnn.onnx", fh)})
        assert model.status_code == 201, model.text
        created = client.post("/v1/jobs", json={
            "model_id": model.json()["id"], "dataset": "builtin:digits",
            "analyses": ANALYSES, "max_samples": MAX_SAMPLES})
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        job = wait_for_job(client, job_id, timeout_s=300)
        assert job["status"] == "succeeded", f"{job}\n{service.logs()}"
        report = client.get(f"/v1/jobs/{job_id}/report").raise_for_status().json()

        states = check_page(driver, f"{service.url}/v1/jobs/{job_id}/report.html", report,
                            tmp_path / "screenshots" / "served-report.png")
        prefix = f"{service.url}/v1/jobs/{job_id}/artifacts/"
        assert all(s["url"].startswith(prefix) for s in states), \
            [s["url"] for s in states if not s["url"].startswith(prefix)]
    print(f"served report page checked in {time.monotonic() - started:.1f} s")


def test_cli_report_page_loads_every_image(driver, cnn_files, tmp_path):
    out = tmp_path / "report"
    analyze(cnn_files["onnx"], "builtin:digits", out,
            JobOptions(analyses=parse_spec(ANALYSES), max_samples=MAX_SAMPLES))
    page = out / "report.html"
    assert page.is_file()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    states = check_page(driver, page.resolve().as_uri(), report,
                        tmp_path / "screenshots" / "cli-report.png")
    prefix = out.resolve().as_uri() + "/"
    assert all(s["url"].startswith(prefix) for s in states), \
        [s["url"] for s in states if not s["url"].startswith(prefix)]
    tip = hover_names_the_point(driver, out, report)
    print(f"hovered a projection point: {tip}")
