"""``python -m lib_clipcap review``: worst first, JSON/CSV rows, flags only, and a torch-free ``--help``."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from _review_data import tagged_folder

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "open_clip", "transformers", "tokenizers", "safetensors")


@pytest.fixture()
def folder(tmp_path):
    return tagged_folder(tmp_path / "set", seed=7, images=5, captioned=4, wrong=3)


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib_clipcap", "review", *argv], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_help_does_not_import_torch():
    code = ("import runpy, sys\n"
            "sys.argv = ['lib_clipcap', 'review', '--help']\n"
            "try:\n"
            "    runpy.run_module('lib_clipcap', run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "--worst" in done.stdout and "--sort" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "LOADED []"


@pytest.mark.slow
def test_json_worst_first_and_csv(folder, tmp_path):
    out = tmp_path / "rows.json"
    done = _run(str(folder), "--model", "shapes-demo", "--json", str(out))
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    rows = data["rows"]
    assert len(rows) == 5 and data["summary"]["missing"] == 1
    assert rows[0]["flags"] == ["missing"] and rows[0]["image"].endswith("4.png")
    scored = [r["clip_score"] for r in rows[1:]]
    assert scored == sorted(scored) and all(s is not None for s in scored)
    assert rows[1]["image"].endswith("3.png")  # the wrong caption is the worst scored one
    assert all(r["grammar"] is not None for r in rows[1:])  # the demo CLIP has a bundled grammar head
    assert {"image", "caption", "caption_file", "clip_score", "grammar", "flags", "tokens"} <= set(rows[1])
    assert "pairs/s" in done.stderr

    # Second run: --worst, CSV on stdout, sorted by grammar; the image features come from the cache.
    done = _run(str(folder), "--model", "shapes-demo", "--csv", "-", "--worst", "2", "--sort", "grammar")
    assert done.returncode == 0, done.stderr
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(table) == 2 and table[0]["flags"] == "missing"
    assert "0 images encoded, 5 from the cache" in done.stderr


@pytest.mark.slow
def test_flags_only_without_a_model(folder):
    (folder / "0.txt").write_text("", encoding="utf-8")
    done = _run(str(folder), "--no-scores", "--flag", "empty", "--flag", "missing")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3 and "empty" in lines[1] + lines[2] and "missing" in lines[1] + lines[2]


def test_bad_folder_is_a_clear_error(tmp_path):
    done = _run(str(tmp_path / "nope"), "--no-scores")
    assert done.returncode == 2
    assert "input not found" in done.stderr and "nope" in done.stderr
