"""What the browser tests in the host double's page share: the skip rules (Chromium, Playwright, a gradio that one of
the hosts runs), which host the installed gradio stands for, and serve_double.py in a subprocess for the page's URL.
Chromium itself is launched with tests/_browser.py's :func:`launch_chromium`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _browser import ROOT, free_port, require_browser

HERE = Path(__file__).resolve().parent


def require_host_browser() -> tuple[Any, str]:
    """Skip the calling test module unless Chromium, Playwright and gradio 3 or 4 are here; returns
    ``(playwright.sync_api, mode)``, mode ``"a1111"`` for gradio 3 and ``"forge"`` for gradio 4. Call it at module
    level."""
    sync_api = require_browser()
    gr = pytest.importorskip("gradio")
    major = int(gr.__version__.split(".")[0])
    if major not in (3, 4):
        pytest.skip(f"gradio {gr.__version__}: the hosts run gradio 3.41 (A1111) and 4.40 (Forge)",
                    allow_module_level=True)
    return sync_api, "a1111" if major == 3 else "forge"


@contextlib.contextmanager
def serve_double(mode: str, root: Path, images: list[Path]) -> Iterator[str]:
    """serve_double.py: the host double as ``mode`` with this extension, in folder ``root``, its fake txt2img
    "Generate" showing ``images``; yields the page's URL once it is served, and stops it after the block."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(HERE / "serve_double.py"), mode, str(free_port()), str(root),
                             *map(str, images)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=root)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("READY "):
            break
    assert lines and lines[-1].startswith("READY "), "".join(lines[-40:])  # its console, if it never got there
    try:
        yield lines[-1].split()[1]
    finally:
        proc.stdin.close()  # serve_double.py serves until its stdin closes
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
