"""The ``facerec serve`` page in a real headless Chromium, used as a person would: open it,
choose two LFW photos, read the decision, see the crops, fail on a text file named .jpg; enrol
two people from two photos each, identify a third photo of one of them.

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
from serving import DIFFERENT, ENROL, IMAGES, MANY_FACES, QUERY, SAME, app_for, served, tiny_folder

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "img"
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
def browser() -> Iterator:
    """Debian's headless Chromium, launched by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright's Python package is not installed (the dev extra)")
    executable = chromium_path()
    if executable is None:
        missing("Chromium not found (apt-get install chromium, or set FACEREC_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=FLAGS)
        yield browser
        browser.close()


def open_page(browser, url: str):
    """A tab on the page at ``url``, its model card loaded."""
    tab = browser.new_page(viewport={"width": 1100, "height": 1000})
    tab.set_default_timeout(60_000)  # a verify request on a busy 2-core machine
    tab.goto(url)
    tab.wait_for_selector("#card-facts dt")
    return tab


@pytest.fixture(scope="module")
def page(browser, live_server):
    """A tab on the served page (a gallery given, empty at start)."""
    return open_page(browser, live_server)


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
    same = [lfw_root / IMAGES / p for p in SAME]
    choose(page, {"a": same[0], "b": same[1]})
    wait_for_decision(page, "Same person")
    similarity = float(page.inner_text("#similarity"))
    assert -1 <= similarity <= 1 and "threshold.json" in page.inner_text("#threshold-source")
    crops = page.eval_on_selector_all(".crops img", "s => s.map(i => i.naturalWidth)")
    assert crops == [112, 112]
    assert page.locator(".stage rect.chosen").count() == 2  # the face boxes drawn
    screenshot(page, tmp_path, "serve.png")

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


def screenshot(page, tmp_path: Path, name: str) -> None:
    """The page as it is, into ``tmp_path``; into docs/img too with FACEREC_SCREENSHOT=1
    (how the README's pictures are made)."""
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get("FACEREC_SCREENSHOT") == "1":
        page.screenshot(path=str(DOCS / name), full_page=True)


def test_the_page_enrols_two_people_then_names_a_third_photo(page, lfw_root, tmp_path):
    page.click('[data-tab="enroll"]')
    for name, files in ENROL.items():
        page.fill('#enroll input[name="name"]', name)
        page.set_input_files(
            '#enroll input[type="file"]', [str(lfw_root / IMAGES / f) for f in files]
        )
        page.click('#enroll button[type="submit"]')
        page.wait_for_function("t => document.querySelector('#enroll-message')?.textContent === t",
                               arg=f"Enrolled {name}: 2 photo(s) in the gallery now.")  # fmt: skip
        assert page.locator("img.enrolled").count() == 2
    assert "2 people, 4 photos" in page.inner_text("#enroll .gallery-summary")
    page.click('[data-tab="identify"]')
    page.set_input_files('#identify input[type="file"]', str(lfw_root / IMAGES / QUERY))
    page.wait_for_selector("#identify .top li")
    ranking = page.eval_on_selector_all("#identify .top li", "s => s.map(li => li.textContent)")
    assert [r.split()[0] for r in ranking] == ["Serena_Williams", "Aaron_Peirsol"]
    assert "cosine" in page.inner_text("#identify-threshold")
    screenshot(page, tmp_path, "serve-identify.png")


def test_a_group_photo_lets_the_user_click_the_face_to_compare(browser, lfw_root, tmp_path):
    pytest.importorskip("facenet_pytorch", reason="the align extra (MTCNN)")
    with served(app_for(tiny_folder(tmp_path / "aligned", lfw_root, aligned=True))) as url:
        page = open_page(browser, url)
        assert page.is_hidden('[data-tab="identify"]') and page.is_hidden('[data-tab="enroll"]')
        group = lfw_root / IMAGES / MANY_FACES
        choose(page, {"a": group, "b": group})
        wait_for_decision(page, "No threshold: no decision")
        assert float(page.inner_text("#similarity")) == pytest.approx(1.0, abs=1e-4)
        assert page.locator('.photo[data-slot="b"] .crops figure').count() == 3
        page.click('.photo[data-slot="b"] .crops figure >> nth=2')
        page.wait_for_selector('.photo[data-slot="b"] .crops figure:nth-child(3).chosen')
        wait_for_decision(page, "No threshold: no decision")
        assert float(page.inner_text("#similarity")) < 0.999  # face 0 against face 2
        assert page.locator('.photo[data-slot="b"] .stage rect.chosen').count() == 1
        screenshot(page, tmp_path, "serve-group.png")
