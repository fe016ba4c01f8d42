"""The train command line: every trainer is listed, and building the parser (``--help``) never imports torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "open_clip", "transformers", "tokenizers", "safetensors", "pycocoevalcap")


def _loaded_after(argv: list[str]) -> tuple[list[str], str]:
    """Run ``python -m lib_clipcap ARGV`` in a fresh interpreter; the heavy modules it loaded, and its stdout."""
    code = ("import runpy, sys\n"
            f"sys.argv = ['lib_clipcap'] + {argv!r}\n"
            "try:\n"
            "    runpy.run_module('lib_clipcap', run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("LOADED")][-1]
    return eval(line.split(" ", 1)[1]), done.stdout


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["train", "rl", "--help"],
                                  ["eval", "--help"]])
def test_help_does_not_import_torch(argv):
    loaded, out = _loaded_after(argv)
    assert loaded == [], (argv, loaded)
    assert "usage:" in out


def test_every_trainer_is_a_subcommand():
    from lib_clipcap.train.cli import TRAINERS, available_trainers

    assert sorted(available_trainers()) == sorted(TRAINERS) == ["clipcap", "features", "grammar", "rl", "sbg"]
    _, out = _loaded_after(["train", "--help"])
    for name in TRAINERS:
        assert name in out
