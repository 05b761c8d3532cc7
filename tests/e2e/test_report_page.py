"""The report page in a real headless Chromium: served by the API and written by the CLI.

Every <img> must load (``complete`` and ``naturalWidth > 0``), every analysis section must
show at least one image, the key numbers of the report JSON must be visible as the templates
format them, and a full-page screenshot is kept (under the pytest tmp folder, and copied to
``$LAYERLENS_SCREENSHOT_DIR`` when that is set).

Without Chromium, chromedriver or selenium the tests are skipped with the reason, except
under ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerlens.analyze import analyze
from layerlens.options import JobOptions
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
    states = browser.wait_for_images(driver)
    assert states, f"no <img> on {url}"
    broken = [s for s in states if not (s["complete"] and s["naturalWidth"] > 0)]
    assert not broken, f"{len(broken)} of {len(states)} images did not load on {url}: {broken}"

    assert browser.section_ids(driver) == SECTIONS
    per_section = {section: [s for s in states if s["section"] == section]
                   for section in SECTIONS}
    empty = [section for section, found in per_section.items() if not found]
    assert not empty, f"sections without an image: {empty}"
    assert not [s for s in states if s["section"] is None], "an image outside every section"
    # one plot each for activations, probes and MI; one per projected layer; one grid per
    # maximised layer plus one picture per unit
    counts = {section: len(found) for section, found in per_section.items()}
    analyses = report["analyses"]
    maximised = [r for r in analyses["activation_maximization"]["layers"] if "units" in r]
    assert counts == {
        "activations": 1, "linear_probe": 1, "mutual_information": 1,
        "projection": len([r for r in analyses["projection"]["layers"] if "image" in r]),
        "activation_maximization": sum(1 + len(r["units"]) for r in maximised),
    }, counts
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

    browser.full_page_screenshot(driver, shot)
    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{shot} is not a PNG"
    assert len(data) > 10_000, f"{shot} is only {len(data)} bytes"
    keep = os.environ.get("LAYERLENS_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(keep) / shot.name)
    return states


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
