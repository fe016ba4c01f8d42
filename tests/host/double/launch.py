"""Fake ``launch`` (re-exports of ``modules/launch_utils.py``): what an extension's install.py may use.

``run_pip`` never runs pip: it records the call (and appends it, one JSON line, to ``$WEBUI_DOUBLE_PIP_LOG`` when set,
so a test can read what an install.py subprocess asked for). Like the host, it does nothing and returns ``None``
under ``--skip-install``.

Forge Neo and Forge Classic: with ``--uv`` / ``--uv-symlink`` (on the command line or in ``$COMMANDLINE_ARGS``, which
the host appends to ``sys.argv``), their launch.py patches ``subprocess.run`` (modules_forge/uv_hook.py) so that every
``pip`` command becomes ``uv pip ...`` without ``--prefer-binary`` / ``--ignore-installed`` / ``-I`` (plus
``--link-mode symlink`` for ``--uv-symlink``), re-quoted with ``shlex.join`` and ``'`` turned into ``"``. The recorded
``line`` is that command.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shlex
import sys

python = sys.executable
index_url = os.environ.get("INDEX_URL", "")
repo_dir = os.path.join(os.path.dirname(__file__), "repositories")
_argv = sys.argv + os.environ.get("COMMANDLINE_ARGS", "").split()
_uv_host = os.environ.get("WEBUI_DOUBLE_MODE") in ("neo", "classic")
args = argparse.Namespace(skip_install="--skip-install" in _argv or os.environ.get("WEBUI_DOUBLE_SKIP_INSTALL") == "1")
if _uv_host:
    args.uv, args.uv_symlink = "--uv" in _argv, "--uv-symlink" in _argv
pip_calls = []


def _uv_hook(line):
    """modules_forge/uv_hook.py's rewrite of a shell command line that runs pip."""
    command = shlex.split(line)
    if "pip" not in command:
        return line
    cmd = [a for a in command[command.index("pip") + 1:] if a not in ("--prefer-binary", "--ignore-installed", "-I")]
    out = ["uv", "pip", *cmd] + (["--link-mode", "symlink"] if args.uv_symlink else [])
    return shlex.join(out).replace("'", '"')


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
    if _uv_host and (args.uv or args.uv_symlink):
        line = _uv_hook(line)
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
