"""The standalone app in a real browser: `python -m lib_clipcap serve`, headless Debian chromium driven by Playwright.

Opens the UI, uploads an image, clicks Caption, and checks that the caption and the candidates appear. Keeps a
screenshot in artifacts/screenshots/standalone.png; docs/screenshot-standalone.png (the README's) is written when missing
or when CLIPCAP_UPDATE_SCREENSHOTS=1.
Skips when /usr/bin/chromium or playwright is missing (tools/system_deps.sh installs chromium).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "screenshots"

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; tools/system_deps.sh does it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
for _needed in ("gradio", "uvicorn", "fastapi"):  # the server's; found, not imported (gradio takes seconds)
    if importlib.util.find_spec(_needed) is None:
        pytest.skip(f"{_needed} is not installed", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m lib_clipcap serve --demo` on 127.0.0.1:<free port>, started without waiting for it."""

    def __init__(self) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.log = open(ROOT / "artifacts" / "serve.log", "w")  # the server's console, kept for debugging
        self.proc = subprocess.Popen([sys.executable, "-m", "lib_clipcap", "serve", "--port", str(port), "--demo",
                                      "--device", "cpu", "--offline"], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"serve exited with {self.proc.returncode}; see artifacts/serve.log"
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                pass
            assert time.monotonic() < deadline, f"serve did not answer within {timeout:.0f} s"
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


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
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage"])
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
