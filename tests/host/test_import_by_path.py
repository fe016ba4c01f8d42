"""In a fresh interpreter, with nothing of this repository importable but through the extension folder, the script
loads like the host loads it and the packages it needs resolve, with A1111's sys.path restore and Forge's keep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, os, sys
from pathlib import Path
import webui_double as wd

mode, root = sys.argv[1], Path(sys.argv[2])
assert "lib_clipcap" not in sys.modules
webui = wd.WebUI(mode, root).boot()
ext = str(webui.extension_dir)
import lib_clipcap, clipcap_webui
out = {
    "lib_file": lib_clipcap.__file__,
    "webui_file": clipcap_webui.__file__,
    "on_path_after_load": ext in sys.path,
    "callbacks": len(webui.callbacks("ui_tabs")),
}
webui.create_ui()  # on_ui_tabs imports lib_clipcap.app.ui lazily, after A1111 took the folder off sys.path
out["on_path_after_ui"] = ext in sys.path
out["tab"] = any(getattr(b, "elem_id", None) == "tab_clipcap" for b in wd.walk(webui.demo))
out["errors"] = webui.errors()
out["ext"] = ext
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["a1111", "forge"])
def test_fresh_interpreter_loads_the_extension_by_path(mode, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(HERE), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", CHILD, mode, str(tmp_path / "webui")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["lib_file"].startswith(out["ext"] + os.sep)  # found through the extension folder only
    assert out["webui_file"].startswith(out["ext"] + os.sep)
    assert out["callbacks"] == 1
    # A1111 takes the folder off sys.path after the import; the script puts it back once the host is done loading
    assert out["on_path_after_load"] is (mode == "forge")
    assert out["on_path_after_ui"] is True
    assert out["tab"] is True
    assert out["errors"] == []
