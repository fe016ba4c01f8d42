"""The Review section of the Caption tab in a real browser, in the host double's page (gradio 3.41 as A1111, 4.40 as
Forge): open a folder, see the wrong caption first, move with the keyboard, edit + Ctrl+S, undo, recaption and take a
candidate. Keeps artifacts/screenshots/review-host-<mode>.png. Runs where gradio 3 or 4 is installed
(tools/host_envs.sh's venvs); skips without /usr/bin/chromium or playwright.
"""

from __future__ import annotations

import pytest
from _browser import ROOT, SHOTS, launch_chromium
from _host_browser import require_host_browser, serve_double
from _review_data import WRONG, tagged_folder
from _review_page import edit_save_undo, wait_text

sync_api, MODE = require_host_browser()
SAMPLE = ROOT / "lib_clipcap" / "assets" / "samples" / "shapes_00.png"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def webui_root(tmp_path_factory):
    return tmp_path_factory.mktemp("webui")


@pytest.fixture(scope="module")
def dataset(webui_root):
    # under the WebUI's train/ folder: without clipcap_batch_roots the tab may use only the WebUI's own folders
    return tagged_folder(webui_root / "train" / "review_set", seed=31, images=4, wrong=2)


@pytest.fixture(scope="module")
def page_url(webui_root):
    with serve_double(MODE, webui_root, [SAMPLE]) as url:
        yield url


def _wait_text(page, elem_id: str, fragment: str) -> None:
    try:
        wait_text(page, elem_id, fragment, timeout=30_000)
    except Exception:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"review-host-{MODE}-failed.png"), full_page=True)
        raise


def test_review_in_the_caption_tab(page_url, dataset):
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p, "--disable-gpu")
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(90_000)
        page.goto(page_url)
        tab = page.get_by_role("tab", name="Caption").or_(page.get_by_role("button", name="Caption", exact=True))
        tab.first.click()
        page.locator("#clipcap_review").get_by_text("Review", exact=True).first.click()
        page.locator("#clipcap_review_folder textarea, #clipcap_review_folder input").first.fill(str(dataset))
        page.locator("#clipcap_review_scan").click()
        _wait_text(page, "clipcap_review_status", "Scanned and scored 4 images")
        caption = page.locator("#clipcap_review_caption textarea")
        assert caption.input_value() == WRONG  # worst first
        assert "2.png" in page.locator("#clipcap_review_selected").first.inner_text()

        caption.click()
        page.keyboard.press("Alt+ArrowRight")
        _wait_text(page, "clipcap_review_selected", "2 / 4")
        page.keyboard.press("Alt+ArrowLeft")
        _wait_text(page, "clipcap_review_selected", "1 / 4")

        edit_save_undo(page, dataset / "2.txt", wait=_wait_text)
        assert (dataset / "2.txt").read_text(encoding="utf-8") == WRONG  # undo put the wrong caption back

        page.locator("#clipcap_review_recaption").click()
        _wait_text(page, "clipcap_review_compare", "CLIP-S")
        page.locator("#clipcap_review_use").click()
        page.wait_for_function("(wrong) => { const t = document.querySelector('#clipcap_review_caption textarea'); "
                               "return t && t.value.length > 0 && t.value !== wrong; }", arg=WRONG)
        chosen = caption.input_value()
        page.locator("#clipcap_review_save").click()
        _wait_text(page, "clipcap_review_status", "Saved")
        assert (dataset / "2.txt").read_text(encoding="utf-8") == chosen
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"review-host-{MODE}.png"), full_page=True)
        browser.close()
