"""The ``facerec serve`` page in a real headless Chromium, used as a person would: open it,
choose two LFW photos, read the decision, see the crops, fail on a text file named .jpg.

Chromium is Debian's package (``apt-get install chromium``; .ci/run installs it), driven by
Playwright's Python package pointed at that executable: nothing is downloaded at test time.
Without Chromium (or Playwright) the test skips with the reason, except under
FACEREC_REQUIRE_LFW=1 (CI), where it fails, as the LFW tests do.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import DIFFERENT, IMAGES, SAME

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "img" / "serve.png"
FLAGS = [
    *("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"),
    *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
]


def chromium_path() -> str | None:
    """Debian's Chromium (FACEREC_CHROMIUM overrides), or None."""
    return os.environ.get("FACEREC_CHROMIUM") or shutil.which("chromium")


def missing(message: str):
    if os.environ.get("FACEREC_REQUIRE_LFW") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def page(live_server) -> Iterator:
    """A Chromium tab on the served page (the model card loaded)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright's Python package is not installed (the dev extra)")
    executable = chromium_path()
    if executable is None:
        missing("Chromium not found (apt-get install chromium, or set FACEREC_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=FLAGS)
        tab = browser.new_page(viewport={"width": 1100, "height": 1000})
        tab.set_default_timeout(60_000)  # a verify request on a busy 2-core machine
        tab.goto(live_server)
        tab.wait_for_selector("#card-facts dt")
        yield tab
        browser.close()


def choose(page, files: dict[str, Path]) -> None:
    for slot, path in files.items():
        page.set_input_files(f'.photo[data-slot="{slot}"] input', str(path))


def wait_for_decision(page, text: str) -> None:
    page.wait_for_function(
        "t => document.querySelector('#decision').textContent === t && "
        "[...document.querySelectorAll('.crops img')].every(i => i.complete && i.naturalWidth)",
        arg=text,
    )


def test_the_page_verifies_two_photos_shows_the_crops_and_a_readable_error(
    page, lfw_root, tmp_path
):
    assert "MobileFaceNet" in page.inner_text("#card-facts")
    assert page.is_hidden('[data-tab="identify"]')  # no gallery given
    same = [lfw_root / IMAGES / p for p in SAME]
    choose(page, {"a": same[0], "b": same[1]})
    wait_for_decision(page, "Same person")
    similarity = float(page.inner_text("#similarity"))
    assert -1 <= similarity <= 1 and "threshold.json" in page.inner_text("#threshold-source")
    crops = page.eval_on_selector_all(".crops img", "s => s.map(i => i.naturalWidth)")
    assert crops == [112, 112]
    assert page.locator(".stage rect.chosen").count() == 2  # the face boxes drawn
    page.screenshot(path=str(tmp_path / "same.png"), full_page=True)
    if os.environ.get("FACEREC_SCREENSHOT") == "1":  # refresh the README's picture
        page.screenshot(path=str(SCREENSHOT), full_page=True)

    choose(page, {"b": lfw_root / IMAGES / DIFFERENT[1]})
    wait_for_decision(page, "Different people")
    assert page.is_hidden("#error")

    text = tmp_path / "notes.jpg"
    text.write_text("not a photo, only a text file renamed .jpg\n")
    choose(page, {"a": text})
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == "notes.jpg: not an image (allowed: JPEG, PNG, WEBP, BMP)"
    assert page.is_hidden("#result")
    page.screenshot(path=str(tmp_path / "error.png"), full_page=True)
