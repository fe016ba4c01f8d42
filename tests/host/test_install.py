"""install.py: checks without pip, installs only what is missing and ours in one quoted call, never a host pin."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from webui_double import DOUBLE, REPO

# Packages A1111 or Forge pin (requirements_versions.txt / TORCH_COMMAND), or that their pins fix.
HOST_PINNED = {"torch", "torchvision", "transformers", "tokenizers", "gradio", "gradio-client", "open-clip-torch",
               "safetensors", "pydantic", "fastapi", "huggingface-hub", "numpy", "pillow", "httpx", "httpcore",
               "accelerate", "diffusers", "peft", "protobuf", "einops", "kornia", "piexif", "tqdm"}


def load_install():
    spec = importlib.util.spec_from_file_location("install.py", REPO / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeLaunch:
    def __init__(self, skip_install=False, result="", fail=False):
        self.args = SimpleNamespace(skip_install=skip_install)
        self.result, self.fail, self.calls = result, fail, []

    def run_pip(self, command, desc=None, live=False):
        self.calls.append(command)
        if self.fail:
            raise RuntimeError("Couldn't install")
        return self.result


def versions(**overrides):
    """Everything installed at a recent version, except ``overrides`` (``None``: missing)."""
    def version_of(name):
        key = name.lower().replace("-", "_")
        return overrides[key] if key in overrides else "99.0"

    return version_of


def test_runs_as_the_host_runs_it_and_installs_nothing_when_all_is_present(tmp_path):
    log = tmp_path / "pip.jsonl"
    env = {**os.environ, "PYTHONPATH": str(DOUBLE), "WEBUI_DOUBLE_PIP_LOG": str(log)}
    # -X importtime lists every module the run imported (on stderr), so "nothing heavy" is checked by name, not by a
    # wall-clock limit that a loaded machine could break.
    r = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "install.py")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not log.exists(), log.read_text()  # no pip call at all
    assert "disabled" not in r.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    assert "clipcap_webui" in imported  # the listing is real
    heavy = imported & {"torch", "gradio", "transformers", "numpy", "PIL", "open_clip", "safetensors", "lib_clipcap"}
    assert not heavy, heavy  # the host runs install.py at every launch: metadata checks only


def test_installs_missing_packages_of_ours_in_one_quoted_call():
    install = load_install()
    launch = FakeLaunch()
    assert install.main(launch=launch, version_of=versions(ftfy=None, regex=None)) == 2
    assert launch.calls == ['install "ftfy" "regex"']


def test_never_installs_a_host_pinned_package():
    from clipcap_webui.requirements import REQUIREMENTS

    ours = {r.name.lower() for r in REQUIREMENTS if not r.pinned}
    assert not ours & HOST_PINNED
    install = load_install()
    launch = FakeLaunch()
    install.main(launch=launch, version_of=lambda name: None)  # nothing at all is installed
    assert len(launch.calls) == 1
    asked = launch.calls[0].split()[1:]
    assert all(a.startswith('"') and a.endswith('"') for a in asked)  # the shell must not see ">" bare
    assert {a.strip('"').split(">=")[0].lower() for a in asked} == ours
    assert "==" not in launch.calls[0]


def test_a_too_old_pinned_package_disables_its_feature(capsys):
    install = load_install()
    launch = FakeLaunch()
    assert install.main(launch=launch, version_of=versions(tokenizers="0.12.1")) == 0
    out = capsys.readouterr().out
    assert launch.calls == []
    assert "[ClipCap] models with their own tokenizer (the bundled demo model) disabled: tokenizers 0.12.1 is " \
           "older than 0.13.3" in out


@pytest.mark.parametrize("launch, message", [
    (FakeLaunch(skip_install=True), "--skip-install"),
    (FakeLaunch(result=None), "pip was skipped"),
    (FakeLaunch(fail=True), "could not install"),
])
def test_skip_install_and_pip_failure(capsys, launch, message):
    install = load_install()
    assert install.main(launch=launch, version_of=versions(ftfy=None)) == 0
    assert message in capsys.readouterr().out
    assert len(launch.calls) == (0 if launch.args.skip_install else 1)


def test_the_host_launch_module_honours_skip_install(tmp_path):
    """The double's ``launch.run_pip`` returns None under --skip-install, as the host's does."""
    log = tmp_path / "pip.jsonl"
    code = ("import sys; sys.argv.append('--skip-install'); import launch; "
            "print(launch.run_pip('install \"x>=1\"', 'x'))")
    env = {**os.environ, "PYTHONPATH": str(DOUBLE), "WEBUI_DOUBLE_PIP_LOG": str(log)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "None" and not log.exists()
    r = subprocess.run([sys.executable, "-c", code.replace("sys.argv.append('--skip-install'); ", "")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert json.loads(log.read_text())["command"] == 'install "x>=1"'
