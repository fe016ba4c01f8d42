"""What the standalone-app browser tests share: skipping without Chromium or Playwright, `python -m lib_clipcap
serve` in a subprocess on a free port, and a headless Chromium."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "artifacts" / "screenshots"


def require_browser() -> Any:
    """Skip the calling test module unless Chromium, Playwright and the server's packages are here; returns
    ``playwright.sync_api``. Call it at module level."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; tools/system_deps.sh does it)",
                    allow_module_level=True)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    for needed in ("gradio", "uvicorn", "fastapi"):  # the server's; found, not imported (gradio takes seconds)
        if importlib.util.find_spec(needed) is None:
            pytest.skip(f"{needed} is not installed", allow_module_level=True)
    return sync_api


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m lib_clipcap serve --demo` (plus ``extra`` arguments) on 127.0.0.1:<free port>, started without
    waiting for it; its console goes to ``artifacts/<log_name>``."""

    def __init__(self, *extra: str, log_name: str = "serve.log") -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        self.log_name = log_name
        env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.log = open(ROOT / "artifacts" / log_name, "w")  # the server's console, kept for debugging
        self.proc = subprocess.Popen([sys.executable, "-m", "lib_clipcap", "serve", "--port", str(port), "--demo",
                                      "--device", "cpu", "--offline", *extra], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"serve exited with {self.proc.returncode}; see artifacts/{self.log_name}"
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


def launch_chromium(playwright: Any, *extra_args: str) -> Any:
    """Headless Debian Chromium (Playwright's own browser download does not work here), with ``extra_args`` added to
    its command line."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=["--no-sandbox", "--disable-dev-shm-usage", *extra_args])
