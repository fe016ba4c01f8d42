"""The Review section of the Caption tab in a real browser, in the host double's page (gradio 3.41 as A1111, 4.40 as
Forge): open a folder, see the wrong caption first, move with the keyboard, edit + Ctrl+S, undo, recaption and take a
candidate. Keeps artifacts/screenshots/review-host-<mode>.png. Runs where gradio 3 or 4 is installed
(tools/host_envs.sh's venvs); skips without /usr/bin/chromium or playwright.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from _review_data import WRONG, tagged_folder

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "screenshots"

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (tools/system_deps.sh installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
gr = pytest.importorskip("gradio")
GRADIO_MAJOR = int(gr.__version__.split(".")[0])
if GRADIO_MAJOR not in (3, 4):
    pytest.skip(f"gradio {gr.__version__}: the hosts run gradio 3.41 (A1111) and 4.40 (Forge)", allow_module_level=True)
MODE = "a1111" if GRADIO_MAJOR == 3 else "forge"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tagged_folder(tmp_path_factory.mktemp("review_set"), seed=31, images=4, wrong=2)


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    root = tmp_path_factory.mktemp("webui")
    sample = ROOT / "lib_clipcap" / "assets" / "samples" / "shapes_00.png"
    proc = subprocess.Popen([sys.executable, str(HERE / "serve_double.py"), MODE, str(port), str(root), str(sample)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=root)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("READY "):
            break
    assert lines and lines[-1].startswith("READY "), "".join(lines[-40:])
    yield lines[-1].split()[1]
    proc.stdin.close()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_text(page, elem_id: str, fragment: str) -> None:
    try:
        page.wait_for_function("([id, frag]) => { const e = document.querySelector('#' + id); "
                               "return e && e.innerText.includes(frag); }", arg=[elem_id, fragment], timeout=30_000)
    except Exception:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"review-host-{MODE}-failed.png"), full_page=True)
        raise


def test_review_in_the_caption_tab(page_url, dataset):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
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

        caption.fill("a hand-written caption")
        page.keyboard.press("Control+s")
        _wait_text(page, "clipcap_review_status", "Saved")
        assert (dataset / "2.txt").read_text(encoding="utf-8") == "a hand-written caption"
        page.locator("#clipcap_review_undo").click()
        _wait_text(page, "clipcap_review_status", "Undone: 1 restored")
        assert (dataset / "2.txt").read_text(encoding="utf-8") == WRONG

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
