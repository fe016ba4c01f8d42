"""``python -m lib_clipcap tag``: output and exit codes, and the crash test (SIGKILL mid-run, then resume)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _batch_data import one_torch_thread, shapes_pngs

from lib_clipcap.batch import BatchLockedError, TagOptions, run_tagging
from lib_clipcap.batch import cli as tag_cli
from lib_clipcap.batch.journal import JOURNAL_NAME
from lib_clipcap.batch.lock import LOCK_NAME, FolderLock
from lib_clipcap.app.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread():
    with one_torch_thread():  # 2 shared cores: see _batch_data.py
        yield


make_images = functools.partial(shapes_pngs, seed=11, prefix="im")  # (folder, n) -> the PNGs' paths


@pytest.fixture
def fast_model(demo_captioner, monkeypatch):
    """Skip reloading the demo model for every in-process CLI call."""
    monkeypatch.setattr(tag_cli, "load_captioner", lambda args, allow_demo_fallback: demo_captioner)
    return demo_captioner


def test_summary_line_failures_and_exit_codes(fast_model, tmp_path, capsys):
    make_images(tmp_path, 2)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    args = ["tag", str(tmp_path), "--model", "shapes-demo", "--batch-size", "2", "--workers", "0"]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[-1].startswith("written 2, already done (resume) 0, had a caption (policy) 0, failed 1 in ")
    assert f"clipcap: failed: {tmp_path / 'bad.png'}: Cannot load image" in err
    assert "img/s" in err  # tqdm progress on stderr
    (tmp_path / "bad.png").unlink()
    assert main(args) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("written 0, already done (resume) 2, had a caption (policy) 0, failed 0")


def test_dry_run_lists_and_writes_nothing(fast_model, tmp_path, capsys):
    imgs = make_images(tmp_path, 2)
    imgs[0].with_suffix(".txt").write_text("keep")
    assert main(["tag", str(tmp_path), "--dry-run", "--existing", "append"]) == 0
    out = capsys.readouterr().out
    assert f"append\t{imgs[0].with_suffix('.txt')}\t<- {imgs[0]}" in out
    assert f"create\t{imgs[1].with_suffix('.txt')}" in out
    assert "would write 2, already done (resume) 0, had a caption (policy) 0, failed 0" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["im00.png", "im00.txt", "im01.png"]


def test_usage_errors_and_locked_folder_exit_2(fast_model, tmp_path, capsys):
    make_images(tmp_path, 1)
    assert main(["tag"]) == 2
    assert "give at least one folder" in capsys.readouterr().err
    assert main(["tag", str(tmp_path / "missing")]) == 2
    assert "input not found" in capsys.readouterr().err
    assert main(["tag", str(tmp_path), "--ext", ".png"]) == 2
    assert "--ext '.png' is invalid" in capsys.readouterr().err  # the flag as typed, not the API field
    with FolderLock(tmp_path):
        assert main(["tag", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"PID {os.getpid()}" in err and str(tmp_path / LOCK_NAME) in err


def test_no_model_given_never_falls_back_to_the_demo_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLIPCAP_MODELS_DIR", str(tmp_path / "models"))
    make_images(tmp_path / "ds", 1)
    assert main(["tag", str(tmp_path / "ds"), "--offline"]) == 2
    err = capsys.readouterr().err
    assert "flickr8k" in err and "falling back" not in err
    assert not list((tmp_path / "ds").glob("*.txt"))


def test_manifests_are_new_files_or_our_own_and_refusals_name_the_flag(fast_model, tmp_path, capsys):
    """Issue 21.1 on the command line: a manifest is only a .jsonl/.csv file that is new or an earlier run's."""
    make_images(tmp_path / "ds", 1)
    (tmp_path / ".bashrc").write_text("export PS1='$ '\n")
    (tmp_path / "sheet.csv").write_text("name,price\nfoo,3\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    base = ["tag", str(tmp_path / "ds"), "--workers", "0", "--max-new-tokens", "5"]
    for flag, value, words in (("--manifest-csv", str(tmp_path / ".bashrc"), "must be a file whose name ends in .csv"),
                               ("--manifest-jsonl", "run.sh", "ends in .jsonl"),
                               ("--manifest-csv", str(tmp_path / "ds" / "im00.png"), "ends in .csv"),
                               ("--manifest-csv", str(tmp_path / "sheet.csv"), "was not written by ClipCap")):
        assert main([*base, flag, value]) == 2
        err = capsys.readouterr().err
        assert f"clipcap: {flag} {value!r} is invalid: " in err and words in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written at all
    assert not (tmp_path / "run.sh").exists()
    # our own manifests are extended by a second run
    mine = ["--manifest-csv", str(tmp_path / "m.csv"), "--manifest-jsonl", str(tmp_path / "m.jsonl")]
    assert main([*base, *mine]) == 0
    assert main([*base, *mine, "--existing", "overwrite"]) == 0
    capsys.readouterr()
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0].startswith("path,output,status") and len(lines) == 3 and lines.count(lines[0]) == 1
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 2


# ------------------------------------------------------------------------------------------------- crash test
# Runs the real CLI in a child process, slowed to 0.4 s per batch so the test can act mid-run.
DRIVER = """
import sys, time
from lib_clipcap.captioner import Captioner
original = Captioner.caption_pixels
def slow(self, *a, **k):
    time.sleep(0.4)
    return original(self, *a, **k)
Captioner.caption_pixels = slow
from lib_clipcap.app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def journal_records(folder: Path) -> int:
    try:
        return max(0, len((folder / JOURNAL_NAME).read_bytes().splitlines()) - 1)
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_sigkill_mid_run_leaves_no_partial_caption_and_rerun_finishes_the_rest(demo_captioner, tmp_path):
    folder, clean = tmp_path / "ds", tmp_path / "clean"
    imgs = make_images(folder, 40)
    shutil.copytree(folder, clean)
    common = ["--model", "shapes-demo", "--device", "cpu", "--batch-size", "4", "--workers", "0", "--prefix", "sks"]
    # What a single uninterrupted run writes (same options: the journal signature must match the CLI's).
    ref_run = run_tagging(TagOptions(inputs=[str(clean)], batch_size=4, workers=0, prefix="sks"), demo_captioner)
    assert ref_run.written == 40
    expected = {p.name: (clean / p.name).with_suffix(".txt").read_text(encoding="utf-8") for p in imgs}

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log = open(tmp_path / "child.log", "wb")
    child = subprocess.Popen([sys.executable, "-c", DRIVER, "tag", str(folder), *common,
                              "--manifest-jsonl", str(tmp_path / "first.jsonl")],
                             cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while journal_records(folder) < 8 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.poll() is None, f"the child ended too soon: {(tmp_path / 'child.log').read_text()}"
        # A second run on the same folder meanwhile fails fast, naming the lock and the child's PID.
        with pytest.raises(BatchLockedError, match=rf"PID {child.pid} .*{LOCK_NAME}"):
            run_tagging(TagOptions(inputs=[str(folder)], prefix="sks", workers=0), demo_captioner)
        assert journal_records(folder) < 40
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        log.close()
    assert child.returncode == -signal.SIGKILL

    # No empty or half-written caption: every caption file holds exactly what a clean run writes. (The journal runs
    # ahead of the files by up to a batch: records are fsynced before the renames, see journal.py.)
    done_before = {p.with_suffix(".png").name for p in folder.glob("*.txt")}
    assert 4 <= len(done_before) < 40
    for name in done_before:
        assert (folder / name).with_suffix(".txt").read_text(encoding="utf-8") == expected[name]
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == child.pid  # the stale lock of the dead run

    # Rerun the same command: it takes over the stale lock and captions only the rest.
    assert main(["tag", str(folder), *common, "--manifest-jsonl", str(tmp_path / "second.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "second.jsonl").read_text(encoding="utf-8").splitlines()]
    written = {Path(r["path"]).name for r in rows if r["status"] == "written"}
    skipped = {Path(r["path"]).name for r in rows if r["status"] == "skipped"}
    assert written == {p.name for p in imgs} - done_before and skipped == done_before
    assert all("journal" in r["reason"] for r in rows if r["status"] == "skipped")
    for p in imgs:
        assert p.with_suffix(".txt").read_text(encoding="utf-8") == expected[p.name]
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name == LOCK_NAME]
    assert leftovers == []  # no temporary file and no lock remain
