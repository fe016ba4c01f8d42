"""install.py: checks without pip, installs only what is missing and ours in one quoted call, never a host pin."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
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


# ------------------------------------------------------------------------------------ Forge Neo and Forge Classic
from webui_double import DOUBLE_CLASSIC, DOUBLE_FORGE, DOUBLE_NEO  # noqa: E402

# What Neo and Classic pin (their requirements.txt and launch_utils.py), besides HOST_PINNED: never ours to install.
NEO_CLASSIC_PINNED = HOST_PINNED | {"pydantic-core", "spandrel", "opencv-python", "timm", "pillow-heif", "lark"}
HOST_PATHS = {"a1111": [DOUBLE], "forge": [DOUBLE_FORGE, DOUBLE], "neo": [DOUBLE_NEO, DOUBLE_FORGE, DOUBLE],
              "classic": [DOUBLE_CLASSIC, DOUBLE_FORGE, DOUBLE]}


def host_env(mode, **extra):
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, HOST_PATHS[mode])), "WEBUI_DOUBLE_MODE": mode,
            **extra}


@pytest.mark.parametrize("mode", ["a1111", "forge", "neo", "classic"])
def test_install_py_tells_the_hosts_apart_without_importing_them(mode):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from clipcap_webui.requirements import detect_host; "
            "print(detect_host()); print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('modules', 'backend', 'ldm_patched', 'launch')))")
    r = subprocess.run([sys.executable, "-c", code, str(REPO)], env=host_env(mode), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    name, imported = r.stdout.splitlines()
    assert name == mode
    assert imported == "[]"  # found, not imported (only modules_forge.forge_version is)


def test_neo_gets_open_clip_from_us_but_never_its_pins():
    """Neo ships no open_clip: install.py installs one whose requirements leave Neo's protobuf 4.25, numpy 2.3,
    transformers and torch alone (open_clip >= 2.26.1 has no protobuf<4 bound)."""
    install = load_install()
    from clipcap_webui.requirements import check

    plan = check(lambda name: None, host="neo")  # nothing at all installed
    assert 'open-clip-torch>=2.26.1' in plan.install
    assert not {spec.split(">=")[0].lower() for spec in plan.install} & (NEO_CLASSIC_PINNED - {"open-clip-torch"})
    assert install.main(launch=FakeLaunch(), version_of=lambda name: "99.0") == 0  # all there: no pip call
    plan = check(lambda name: "99.0", host="neo")
    assert plan.install == [] and plan.disabled == {}


def test_classic_pins_an_open_clip_too_old_for_the_captioner_and_transformers_serves(capsys):
    """Classic's open-clip-torch 1.3.0 is never upgraded (Classic re-pins it after the installers): the captioner's
    CLIP runs through Classic's transformers 4.30.2 (lib_clipcap.clip_transformers), and only without a usable
    transformers is the captioner off."""
    from clipcap_webui.requirements import check, messages

    classic = {"open-clip-torch": "1.3.0", "transformers": "4.30.2"}
    plan = check(lambda name: classic.get(name, "99.0"), host="classic")
    assert plan.install == [] and plan.core_ok and plan.disabled == {}
    assert messages(plan) == ["captioning: open-clip-torch 1.3.0 is older than 2.20.0 (the WebUI pins it); "
                              "transformers 4.30.2 serves instead"]
    for transformers, why in ((None, "transformers is not installed"), ("4.26.1", "transformers 4.26.1 is older")):
        plan = check(lambda name: {**classic, "transformers": transformers}.get(name, "99.0"), host="classic")
        assert plan.install == [] and not plan.core_ok
        assert messages(plan)[0].startswith(
            f"captioning disabled: open-clip-torch 1.3.0 is older than 2.20.0 and {why}")


@pytest.mark.parametrize("flag, link", [("--uv", False), ("--uv-symlink", True)])
@pytest.mark.parametrize("mode", ["neo", "classic"])
def test_the_hosts_uv_installer_gets_one_well_quoted_call(tmp_path, mode, flag, link):
    """--uv in $COMMANDLINE_ARGS: the host's uv hook (modules_forge/uv_hook.py) turns install.py's run_pip into
    ``uv pip install ...`` (no --prefer-binary); the specifiers survive its shlex re-quoting."""
    log = tmp_path / "pip.jsonl"
    code = ("import importlib.util, sys; sys.path.insert(0, sys.argv[1]); import launch; "
            "spec = importlib.util.spec_from_file_location('install.py', sys.argv[1] + '/install.py'); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "print(m.main(launch=launch, version_of=lambda n: None if n in ('ftfy', 'open-clip-torch') else '99.0'))")
    r = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=60,
                       env=host_env(mode, COMMANDLINE_ARGS=flag, WEBUI_DOUBLE_PIP_LOG=str(log)))
    assert r.returncode == 0, r.stderr
    call = json.loads(log.read_text())
    import shlex

    argv = shlex.split(call["line"])
    assert argv[:3] == ["uv", "pip", "install"] and "--prefer-binary" not in argv
    assert ("--link-mode" in argv) is link
    asked = [a for a in argv[3:] if not a.startswith("--") and a != "symlink"]
    if mode == "neo":
        assert asked == ["open-clip-torch>=2.26.1", "ftfy"]
    else:  # Classic pins open_clip: only ours is asked for, and the captioner says what serves its CLIP instead
        assert asked == ["ftfy"] and "captioning disabled" not in r.stdout
        assert "open-clip-torch is not installed (the WebUI pins it); transformers 99.0 serves instead" in r.stdout
