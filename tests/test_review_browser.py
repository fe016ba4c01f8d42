"""The Review section in a real browser: `python -m lib_clipcap serve --batch-root DIR`, headless chromium driven by
Playwright. Open a folder, see the wrong caption first, sort, move with the keyboard, edit and save with Ctrl+S, undo,
recaption and take a candidate, bulk-prefix with a preview. Keeps a screenshot in artifacts/screenshots/review.png.
Skips when /usr/bin/chromium or playwright is missing (tools/system_deps.sh installs chromium).
"""

from __future__ import annotations

import pytest
from _browser import SHOTS, Server, launch_chromium, require_browser
from _review_data import WRONG, tagged_folder
from _review_page import HAND_WRITTEN, edit_save_undo, wait_text

sync_api = require_browser()

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("review_root")
    return root, tagged_folder(root / "set", seed=21, images=5, wrong=3)


@pytest.fixture(scope="module")
def server(dataset):
    srv = Server("--batch-root", str(dataset[0]), log_name="serve-review.log")
    yield srv.wait(timeout=120)
    srv.stop()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        pg.set_default_timeout(90_000)
        pg.goto(server)
        yield pg
        browser.close()


def _text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").first.inner_text()


def _caption_box(page):
    return page.locator("#clipcap_review_caption textarea")


def test_open_sort_edit_save_undo_recaption_bulk(page, dataset):
    _, ds = dataset
    page.get_by_text("Review", exact=True).first.click()  # open the accordion
    page.locator("#clipcap_review_folder textarea, #clipcap_review_folder input").first.fill("set")
    page.locator("#clipcap_review_scan").click()
    wait_text(page, "clipcap_review_status", "Scanned and scored 5 images")
    # Worst first: the wrong caption is selected and shown, the gallery has every image.
    assert _caption_box(page).input_value() == WRONG
    assert "1 / 5" in _text(page, "clipcap_review_selected") and "3.png" in _text(page, "clipcap_review_selected")
    assert page.locator("#clipcap_review_gallery img").count() >= 5

    # Sort by path.
    sort = page.locator("#clipcap_review_sort input").first
    sort.click()
    page.get_by_role("option", name="path", exact=True).click()
    wait_text(page, "clipcap_review_selected", "0.png")

    # Keyboard: Alt+Right moves to the next image even from the caption box.
    _caption_box(page).click()
    page.keyboard.press("Alt+ArrowRight")
    wait_text(page, "clipcap_review_selected", "1.png")
    assert "2 / 5" in _text(page, "clipcap_review_selected")

    # Edit and save with Ctrl+S; then undo.
    edit_save_undo(page, ds / "1.txt")

    # Recaption the selected image with the demo model; take the first candidate; save it.
    page.locator("#clipcap_review_recaption").click()
    wait_text(page, "clipcap_review_compare", "CLIP-S")
    page.locator("#clipcap_review_use").click()
    page.wait_for_function("(typed) => { const t = document.querySelector('#clipcap_review_caption textarea'); "
                           "return t && t.value.endsWith('.') && t.value !== typed; }", arg=HAND_WRITTEN)
    chosen = _caption_box(page).input_value()
    assert chosen in _text(page, "clipcap_review_compare")
    page.locator("#clipcap_review_save").click()
    # The demo model may give back exactly the caption that is there: then the save changes nothing.
    page.wait_for_function("() => { const t = document.querySelector('#clipcap_review_status').innerText; "
                           "return t.includes('Saved') || t.includes('No change'); }")
    assert (ds / "1.txt").read_text(encoding="utf-8") == chosen

    # Bulk prefix: preview the count, apply, every file starts with the trigger.
    page.get_by_text("Bulk edit", exact=True).first.click()
    page.locator("#clipcap_review_prefix textarea, #clipcap_review_prefix input").first.fill("sks")
    page.locator("#clipcap_review_bulk_preview").click()
    wait_text(page, "clipcap_review_bulk_info", "5 caption files would change")
    assert all(not p.read_text(encoding="utf-8").startswith("sks") for p in ds.glob("*.txt"))
    page.locator("#clipcap_review_bulk_apply").click()
    wait_text(page, "clipcap_review_status", "Changed 5 caption files")
    assert all(p.read_text(encoding="utf-8").startswith("sks, ") for p in ds.glob("*.txt"))
    page.screenshot(path=str(SHOTS / "review.png"), full_page=True)
