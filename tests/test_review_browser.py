"""The Review section in a real browser: `python -m lib_clipcap serve --batch-root DIR`, headless chromium driven by
Playwright. Open a folder, see the wrong caption first, sort, move with the keyboard, edit and save with Ctrl+S, undo,
recaption and take a candidate, bulk-prefix with a preview. Then a trigger set (issue 20): scores unchanged by the
trigger, "Use candidate" keeps it, paging past the first page, full labels on hover, multi-select bulk edit of the
selection only, a refused save keeps the typed text. Keeps screenshots in artifacts/screenshots/review*.png.
Skips when /usr/bin/chromium or playwright is missing (tools/system_deps.sh installs chromium).
"""

from __future__ import annotations

import re

import pytest
from _browser import SHOTS, Server, launch_chromium, require_browser
from _review_data import WRONG, tagged_folder
from _review_page import HAND_WRITTEN, edit_save_undo, wait_text

sync_api = require_browser()

TRIGGER_SET = 65

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("review_root")
    # A trigger set of more than a page (60) and the same captions without the trigger.
    tagged_folder(root / "plain", seed=23, images=TRIGGER_SET, wrong=7)
    trig = tagged_folder(root / "trig", seed=23, images=TRIGGER_SET, wrong=7)
    for p in trig.glob("*.txt"):
        p.write_text("sks, " + p.read_text(encoding="utf-8"), encoding="utf-8")
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
        pg.clipcap_url = server
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


def _scores(info: str) -> str:
    """``"CLIP-S 1.23 · grammar 0.45"`` of the selected row's info."""
    m = re.search(r"CLIP-S [-0-9.]+ · grammar [-0-9.]+", info)
    assert m, info
    return m.group(0)


def _rel(info: str) -> str:
    """The selected image's path in the folder, from its info line."""
    m = re.search(r"[\w-]+\.png", info)
    assert m, info
    return m.group(0)


def _scan(page, folder: str, n: int) -> None:
    page.locator("#clipcap_review_folder textarea, #clipcap_review_folder input").first.fill(folder)
    page.locator("#clipcap_review_scan").click()
    page.wait_for_function("([frag, folder]) => { const s = document.querySelector('#clipcap_review_status'); "
                           "const m = document.querySelector('#clipcap_review_summary'); "
                           "return s && s.innerText.includes(frag) && m && m.innerText.includes(folder); }",
                           arg=[f"Scanned and scored {n} images", "/" + folder])


def test_trigger_set_paging_selection_and_refused_save(page, dataset):
    root, _ = dataset
    trig = root / "trig"
    page.goto(page.clipcap_url)  # a fresh page: nothing open, nothing selected
    page.get_by_text("Review", exact=True).first.click()

    # The same captions without the trigger: the order and the scores the trigger set must show too.
    _scan(page, "plain", TRIGGER_SET)
    plain_info = _text(page, "clipcap_review_selected")
    plain_caption = _caption_box(page).input_value()
    page.get_by_text("Next page »", exact=True).click()
    wait_text(page, "clipcap_review_position", f"Rows 61–{TRIGGER_SET} of {TRIGGER_SET}")
    plain_page2 = _text(page, "clipcap_review_selected")

    _scan(page, "trig", TRIGGER_SET)
    summary = _text(page, "clipcap_review_summary")
    assert "trigger" in summary and "sks" in summary and "rows 1–60 of 65" in summary
    info = _text(page, "clipcap_review_selected")
    assert _scores(info) == _scores(plain_info), (info, plain_info)  # scores unchanged by the trigger
    assert _rel(info) == _rel(plain_info)  # the same image worst first
    assert "Trigger words" in info and "sks" in info
    assert _caption_box(page).input_value() == plain_caption  # the box holds the body, the trigger shown apart

    # Paging past the first page: the position, the gallery and the selection follow.
    page.get_by_text("Next page »", exact=True).click()
    wait_text(page, "clipcap_review_position", f"Rows 61–{TRIGGER_SET} of {TRIGGER_SET} · page 2 / 2")
    wait_text(page, "clipcap_review_selected", f"61 / {TRIGGER_SET}")
    info = _text(page, "clipcap_review_selected")
    assert _scores(info) == _scores(plain_page2) and _rel(info) == _rel(plain_page2)
    page.wait_for_function("(n) => document.querySelectorAll('#clipcap_review_gallery img').length === n",
                           arg=TRIGGER_SET - 60)

    # Full labels on hover: the gallery's captions (cut to the thumbnail) carry the whole text as their title...
    page.wait_for_function("() => { const c = document.querySelectorAll('#clipcap_review_gallery .caption-label');"
                           " return c.length > 0 && [...c].every((e) => e.title && e.title.includes('sks')); }")
    # ...and each row of the page's list carries its whole label as its title.
    page.get_by_text("This page as a list (full labels on hover), select for bulk edit", exact=True).first.click()
    item = page.locator("#clipcap_review_page_list li").first
    title = item.get_attribute("title")
    assert title.startswith("61. ") and "trigger: sks" in title and title.endswith(_caption_box(page).input_value())

    # A refused save keeps what was typed.
    rel = _rel(info)
    caption_file = trig / (rel[: -len(".png")] + ".txt")
    before = caption_file.read_text(encoding="utf-8")
    typed = "two\nlines typed by hand"
    _caption_box(page).fill(typed)
    page.locator("#clipcap_review_save").click()
    wait_text(page, "clipcap_review_status", "refused")
    assert _caption_box(page).input_value() == typed
    assert caption_file.read_text(encoding="utf-8") == before

    # Recaption, "Use candidate", save: the trigger stays first, once.
    page.locator("#clipcap_review_recaption").click()
    wait_text(page, "clipcap_review_compare", "CLIP-S")
    page.locator("#clipcap_review_use").click()
    page.wait_for_function("(typed) => { const t = document.querySelector('#clipcap_review_caption textarea'); "
                           "return t && t.value !== typed; }", arg=typed)
    chosen = _caption_box(page).input_value()
    assert not chosen.startswith("sks")
    page.locator("#clipcap_review_save").click()
    page.wait_for_function("() => { const t = document.querySelector('#clipcap_review_status').innerText; "
                           "return t.includes('Saved') || t.includes('No change'); }")
    assert caption_file.read_text(encoding="utf-8") == "sks, " + chosen

    # Multi-select: tick two images of this page, bulk-edit the selection only.
    boxes = page.locator("#clipcap_review_picked label")
    assert boxes.count() == TRIGGER_SET - 60
    picked = [boxes.nth(i).inner_text().strip() for i in (1, 3)]
    for i in (1, 3):
        boxes.nth(i).click()
    wait_text(page, "clipcap_review_position", "2 selected")
    page.get_by_text("Bulk edit", exact=True).first.click()
    page.locator("#clipcap_review_find textarea, #clipcap_review_find input").first.fill("background")
    page.locator("#clipcap_review_replace textarea, #clipcap_review_replace input").first.fill("backdrop")
    page.locator("#clipcap_review_scope").get_by_text("selected", exact=True).click()
    before = {p.name: p.read_text(encoding="utf-8") for p in trig.glob("*.txt")}
    page.locator("#clipcap_review_bulk_preview").click()
    wait_text(page, "clipcap_review_bulk_info", "2 caption files would change")
    page.locator("#clipcap_review_bulk_apply").click()
    wait_text(page, "clipcap_review_status", "Changed 2 caption files")
    after = {p.name: p.read_text(encoding="utf-8") for p in trig.glob("*.txt")}
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {p[: -len(".png")] + ".txt" for p in picked}
    assert all(after[k].startswith("sks, ") and after[k].count("sks") == 1 and "backdrop" in after[k]
               for k in changed)
    page.screenshot(path=str(SHOTS / "review-trigger.png"), full_page=True)
