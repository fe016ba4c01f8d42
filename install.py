"""Run by the WebUI at every launch (``python <extension>/install.py``, unless ``--skip-install``).

Fast and idempotent: versions are read with ``importlib.metadata`` (no pip call when everything is present). What is
missing and ours is installed in ONE ``launch.run_pip`` call with quoted lower-bound specifiers. Packages the host
pins (torch, open-clip-torch, safetensors, transformers/tokenizers, huggingface-hub, numpy, Pillow, gradio, fastapi,
pydantic...) are never installed or upgraded: the host would downgrade them at its next launch. A feature whose
host-pinned package is too old is reported as disabled instead (see ``clipcap_webui/requirements.py``).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from clipcap_webui import LOG_PREFIX  # noqa: E402
from clipcap_webui.requirements import check, messages  # noqa: E402


def main(launch=None, version_of=None) -> int:
    """Install what is missing; returns the number of packages asked of pip (0 when none, or skipped)."""
    plan = check(version_of) if version_of else check()
    for line in messages(plan):
        print(f"{LOG_PREFIX} {line}")
    if not plan.install:
        return 0
    if launch is None:
        import launch
    if getattr(getattr(launch, "args", None), "skip_install", False):
        print(f"{LOG_PREFIX} --skip-install: not installing {', '.join(plan.install)}")
        return 0
    quoted = " ".join(f'"{spec}"' for spec in plan.install)  # quoted: the shell would read ">" as a redirect
    try:
        result = launch.run_pip(f"install {quoted}", f"ClipCap requirements: {', '.join(plan.install)}")
    except RuntimeError as e:  # pip failed (offline, no wheel...): the host goes on; the extension reports it
        print(f"{LOG_PREFIX} could not install {', '.join(plan.install)}: {e}")
        return 0
    if result is None:  # run_pip does nothing under --skip-install
        print(f"{LOG_PREFIX} pip was skipped; install {', '.join(plan.install)} to enable ClipCap")
        return 0
    return len(plan.install)


if __name__ == "__main__":
    main()
