"""The standalone app in a real browser: `python -m lib_clipcap serve`, headless Debian chromium driven by Playwright.

Opens the UI, uploads an image, clicks Caption, and checks that the caption and the candidates appear. Keeps a
screenshot in artifacts/screenshots/standalone.png; docs/screenshot-standalone.png (the README's) is written when missing
or when CLIPCAP_UPDATE_SCREENSHOTS=1.
Skips when /usr/bin/chromium or playwright is missing (tools/system_deps.sh installs chromium).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
import urllib.request

import pytest
from _browser import ROOT, SHOTS, Server, launch_chromium, require_browser

sync_api = require_browser()


def _loaded(url: str, model: str) -> bool:
    with urllib.request.urlopen(url + "clipcap/v1/models", timeout=60) as r:
        return model in json.load(r)["loaded"]


@pytest.fixture(scope="module")
def server():
    srv = Server()  # boots while the browser starts
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.mark.slow
def test_upload_caption_and_see_candidates(server, browser, tmp_path):
    from lib_clipcap import shapes

    SHOTS.mkdir(parents=True, exist_ok=True)
    picture = tmp_path / "shapes.png"
    scene = shapes.heldout_scenes(1)[0]
    scene.render().resize((256, 256)).save(picture)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    url = server.wait()
    # the server preloads and warms up its default model in the background; wait for it so the status line (and the
    # README's screenshot) shows a warm model's time -- /models answers once the load released the manager's lock
    deadline = time.monotonic() + 90
    while not _loaded(url, "shapes-demo"):
        assert time.monotonic() < deadline, "the demo model was not preloaded"
        time.sleep(0.3)
    page.goto(url)
    page.locator("#clipcap_image input[type=file]").set_input_files(str(picture))
    page.locator("#clipcap_image img").first.wait_for(state="visible")
    page.locator("#clipcap_caption_button").click()
    page.wait_for_function(
        "() => { const t = document.querySelector('#clipcap_caption textarea'); return t && t.value.length > 0; }")
    caption = page.locator("#clipcap_caption textarea").input_value()
    assert caption.endswith(".") and len(caption.split()) >= 3, caption
    # the same request through the API of the same server gives the candidates the table must show
    payload = json.dumps({"image": base64.b64encode(picture.read_bytes()).decode()}).encode()
    req = urllib.request.Request(url + "clipcap/v1/caption", data=payload,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        api = json.load(r)
    assert api["caption"] == caption and len(api["candidates"]) == 3
    shown = page.locator("#clipcap_candidates").inner_text()
    for cand in api["candidates"]:
        assert cand["text"] in shown and f"{cand['score']:.3f}" in shown, (cand, shown)
    status = page.locator("#clipcap_status").first.inner_text()
    assert status.startswith("shapes-demo: 3 candidates in"), status
    notice = page.locator("#clipcap_notice").first.inner_text()
    assert "Demo mode" in notice

    shot = SHOTS / "standalone.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    readme_shot = ROOT / "docs" / "screenshot-standalone.png"  # the README's picture: refreshed on request only,
    if not readme_shot.exists() or os.environ.get("CLIPCAP_UPDATE_SCREENSHOTS") == "1":  # so runs leave git clean
        readme_shot.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, readme_shot)
    page.close()
