"""Steps on the Review section's page that its browser tests share: the standalone app's (test_review_browser.py) and
the host double's Caption tab (host/test_review_webui_browser.py) build the section from the same code, so the same
element ids and the same status messages hold in both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

#: What :func:`edit_save_undo` types into the caption box (and saves, then undoes).
HAND_WRITTEN = "a hand-written caption"


def wait_text(page: Any, elem_id: str, fragment: str, *, timeout: float | None = None) -> None:
    """Wait until the element ``#elem_id`` shows ``fragment`` (``timeout`` in ms; None: the page's default)."""
    page.wait_for_function("([id, frag]) => { const e = document.querySelector('#' + id); "
                           "return e && e.innerText.includes(frag); }", arg=[elem_id, fragment], timeout=timeout)


def edit_save_undo(page: Any, caption_file: Path, *, wait: Callable[[Any, str, str], None] = wait_text) -> None:
    """On the selected image (whose caption is ``caption_file``): type a caption and save it with Ctrl+S, check that it
    reached the file; then undo, and check that the file holds what it held before. ``wait(page, elem_id, fragment)``
    waits for a status message: :func:`wait_text`, or the calling test's own (with its timeout, or a screenshot when
    it fails)."""
    before = caption_file.read_text(encoding="utf-8")
    page.locator("#clipcap_review_caption textarea").fill(HAND_WRITTEN)
    page.keyboard.press("Control+s")
    wait(page, "clipcap_review_status", "Saved")
    assert caption_file.read_text(encoding="utf-8") == HAND_WRITTEN
    page.locator("#clipcap_review_undo").click()
    wait(page, "clipcap_review_status", "Undone: 1 restored")
    assert caption_file.read_text(encoding="utf-8") == before
