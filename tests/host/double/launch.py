"""Fake ``launch`` (re-exports of ``modules/launch_utils.py``): what an extension's install.py may use.

``run_pip`` never runs pip: it records the call (and appends it, one JSON line, to ``$WEBUI_DOUBLE_PIP_LOG`` when set,
so a test can read what an install.py subprocess asked for). Like the host, it does nothing and returns ``None``
under ``--skip-install``.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import sys

python = sys.executable
index_url = os.environ.get("INDEX_URL", "")
repo_dir = os.path.join(os.path.dirname(__file__), "repositories")
args = argparse.Namespace(skip_install="--skip-install" in sys.argv or os.environ.get("WEBUI_DOUBLE_SKIP_INSTALL") == "1")
pip_calls = []


def is_installed(package):
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        try:
            return importlib.util.find_spec(package) is not None
        except ModuleNotFoundError:
            return False


def run_pip(command, desc=None, live=False):
    if args.skip_install:
        return None
    index_url_line = f" --index-url {index_url}" if index_url != "" else ""
    line = f'"{python}" -m pip {command} --prefer-binary{index_url_line}'
    pip_calls.append({"command": command, "desc": desc, "line": line})
    log = os.environ.get("WEBUI_DOUBLE_PIP_LOG")
    if log:
        with open(log, "a", encoding="utf8") as f:
            f.write(json.dumps(pip_calls[-1]) + "\n")
    if os.environ.get("WEBUI_DOUBLE_PIP_FAIL") == "1":
        raise RuntimeError(f"Couldn't install {desc}.\nCommand: {line}\nError code: 1")
    return ""


def run(command, desc=None, errdesc=None, custom_env=None, live=False):
    raise RuntimeError(f"the host double runs no commands: {command}")


def git_clone(url, dir, name, commithash=None):
    raise RuntimeError("the host double clones nothing")
