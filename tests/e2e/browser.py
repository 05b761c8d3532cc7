"""Headless Chromium for end-to-end tests of the report page (selenium + chromedriver).

Uses the system browser and driver (Debian: ``apt-get install chromium chromium-driver``);
nothing is downloaded. ``LAYERLENS_CHROMIUM`` and ``LAYERLENS_CHROMEDRIVER`` override the paths.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

INSTALL_HINT = ("install it with `sudo apt-get install chromium chromium-driver` "
                "(or `make system-deps` as root)")


def _find(env_var: str, *names: str) -> str | None:
    override = os.environ.get(env_var)
    if override:
        return override if os.access(override, os.X_OK) else None
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_path() -> str | None:
    return _find("LAYERLENS_CHROMIUM", "chromium", "chromium-browser", "google-chrome")


def chromedriver_path() -> str | None:
    return _find("LAYERLENS_CHROMEDRIVER", "chromedriver")


def browser_missing() -> str | None:
    """None when selenium, Chromium and chromedriver are all present, else what is missing."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if chromium_path() is None:
        missing.append("chromium")
    if chromedriver_path() is None:
        missing.append("chromedriver")
    if not missing:
        return None
    return f"headless browser test needs {', '.join(missing)}; {INSTALL_HINT}"


@contextmanager
def headless_chromium(width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium WebDriver; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path() or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", "--hide-scrollbars",
                 "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver_path() or "chromedriver"),
                              options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


# Every <img> with its load state and the analysis section (the id of the nearest <h2 id>
# before it) it belongs to; sections are `<h2 id="activations">` and `<h2 id="{kind}">`.
_IMAGES_JS = """
const heads = Array.from(document.querySelectorAll('h2[id]'));
return Array.from(document.images).map(img => {
  let section = null;
  for (const h of heads) {
    if (h.compareDocumentPosition(img) & Node.DOCUMENT_POSITION_FOLLOWING) section = h.id;
  }
  return {src: img.getAttribute('src'), url: img.currentSrc || img.src,
          complete: img.complete, naturalWidth: img.naturalWidth,
          naturalHeight: img.naturalHeight, section: section};
});
"""


def images(driver: Any) -> list[dict[str, Any]]:
    return driver.execute_script(_IMAGES_JS)  # type: ignore[no-any-return]


def wait_for_images(driver: Any, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Wait until every image has finished loading (or failed); their states."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout_s).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
        and all(image["complete"] for image in images(d)))
    return images(driver)


def section_ids(driver: Any) -> list[str]:
    return driver.execute_script(  # type: ignore[no-any-return]
        "return Array.from(document.querySelectorAll('h2[id]')).map(h => h.id);")


def row_cells(driver: Any, section: str, layer: str) -> list[str]:
    """Visible text of the cells of the row for ``layer`` in the first table of ``section``."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(
        By.XPATH, f"//h2[@id='{section}']/following-sibling::table[1]"
                  f"//tr[td/code[normalize-space(text())='{layer}']]")
    if not rows:
        return []
    assert rows[0].is_displayed(), f"the {section} row of {layer} is not visible"
    return [cell.text.strip() for cell in rows[0].find_elements(By.TAG_NAME, "td")]


def severe_console_messages(driver: Any) -> list[str]:
    """Console errors (failed resource loads, script errors), the favicon's 404 excepted."""
    try:
        entries = driver.get_log("browser")
    except Exception:  # some drivers do not expose logs
        return []
    return [entry["message"] for entry in entries
            if entry.get("level") == "SEVERE" and "favicon.ico" not in entry["message"]]


def full_page_screenshot(driver: Any, path: Path) -> Path:
    """The whole page (not only the viewport) as a PNG, through the DevTools protocol."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "fromSurface": True, "clip": clip})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
