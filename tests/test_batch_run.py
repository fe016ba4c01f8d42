"""run_tagging end to end with the bundled demo model: every policy and option, manifests, mirroring, dry run, bad
files, unwritable targets, collisions, worker processes, stopping and resuming, locking."""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path

import pytest

from lib_clipcap import shapes
from lib_clipcap.batch import BatchLockedError, TagOptions, run_tagging
from lib_clipcap.batch import runner
from lib_clipcap.batch.journal import JOURNAL_NAME
from lib_clipcap.batch.lock import LOCK_NAME, FolderLock


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # The CI machine has 2 cores shared with other jobs; two OpenMP threads fighting for them make the tiny model
    # ~20x slower than one thread.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cap(demo_captioner):
    return demo_captioner


def make_images(folder: Path, n: int, *, start: int = 0, size: int = 64, ext: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, scene in enumerate(shapes.make_scenes(7, n, start=start)):
        p = folder / f"img{start + i:02d}{ext}"
        scene.render(size).save(p)
        out.append(p)
    return out


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes and mtime."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def reference(cap, paths) -> dict:
    """What the model says for each image, captioned alone through the plain API."""
    results = cap.caption([str(p) for p in paths], decoding="greedy")  # what batch tagging uses
    return {Path(r.source) if r.source else p: r.text for p, r in zip(paths, results)}


def opts(folder, **kw) -> TagOptions:
    kw.setdefault("workers", 0)
    kw.setdefault("batch_size", 3)
    return TagOptions(inputs=[str(folder)], **kw)


# ---------------------------------------------------------------------------------------------------- the basics
def test_tags_folder_with_prefix_manifests_and_leaves_images_untouched(cap, tmp_path):
    imgs = make_images(tmp_path / "ds", 5) + make_images(tmp_path / "ds" / "sub", 2, start=5)
    ref = {p: t for p, t in zip(imgs, [r.text for r in cap.caption([str(p) for p in imgs], decoding="greedy")])}
    before = snapshot(tmp_path / "ds")
    calls = []
    s = run_tagging(opts(tmp_path / "ds", prefix="sks", manifest_jsonl=str(tmp_path / "m.jsonl"),
                         manifest_csv=str(tmp_path / "m.csv")), cap, progress=lambda *a: calls.append(a))
    assert (s.written, s.skipped, s.failed, s.total) == (7, 0, 0, 7) and s.ok and not s.stopped
    assert s.model == "shapes-demo" and s.images_per_s > 0
    assert s.line() == "written 7, already done (resume) 0, had a caption (policy) 0, failed 0"
    for img in imgs:
        assert img.with_suffix(".txt").read_text(encoding="utf-8") == f"sks, {ref[img]}"
        assert before[img] == (img.read_bytes(), img.stat().st_mtime_ns)  # bytes and mtime unchanged
    assert [c[0] for c in calls] == list(range(1, 8)) and all(c[1] == 7 for c in calls)
    rows = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["path"]: r["caption"] for r in rows} == {str(p): ref[p] for p in imgs}
    assert all(r["status"] == "written" and r["model"] == "shapes-demo" and r["score"] < 0 for r in rows)
    with open(tmp_path / "m.csv", newline="", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["output"] for r in csv_rows] == [r["output"] for r in rows] and csv_rows[0]["status"] == "written"
    # the journal and lock live in the input folder; the lock is gone after the run
    assert (tmp_path / "ds" / JOURNAL_NAME).is_file() and not (tmp_path / "ds" / LOCK_NAME).exists()
    # a rerun finds everything done and touches nothing
    after = snapshot(tmp_path / "ds")
    s2 = run_tagging(opts(tmp_path / "ds", prefix="sks"), cap)
    assert (s2.written, s2.skipped) == (0, 7)
    assert {p: v for p, v in snapshot(tmp_path / "ds").items() if p.name != JOURNAL_NAME} == \
        {p: v for p, v in after.items() if p.name != JOURNAL_NAME}


def test_text_options_are_applied(cap, tmp_path):
    img = make_images(tmp_path, 1)[0]
    raw = cap.caption([str(img)], decoding="greedy")[0].text  # e.g. "a large red circle on a white background."
    first = raw.split()[1]
    s = run_tagging(opts(tmp_path, lowercase=True, strip_period=True, suffix="photo", separator=" | ",
                         replace=[(first, "XX")], max_length=40), cap)
    assert s.written == 1
    text = img.with_suffix(".txt").read_text(encoding="utf-8")
    caption, _, suffix = text.rpartition(" | ")
    assert suffix == "photo" and "XX" in caption and not caption.endswith(".") and len(caption) <= 40
    assert raw.lower().replace(first, "XX").startswith(caption)


def test_banned_words_are_passed_to_the_decoder_and_removed(cap, tmp_path, monkeypatch):
    imgs = make_images(tmp_path, 4)
    seen = []
    original = cap.decoding_options

    def spy(**kw):
        seen.append(kw)
        return original(**kw)

    monkeypatch.setattr(cap, "decoding_options", spy)
    s = run_tagging(opts(tmp_path, banned_words=["background"]), cap)
    assert s.written == 4 and seen[0]["banned_words"] == ["background"]
    assert all("background" not in p.with_suffix(".txt").read_text() for p in imgs)
    assert seen[0]["banned_words"] and cap.ban_ids(["background"])  # the decoder really gets token ids to ban


@pytest.mark.parametrize("policy, expected", [
    ("skip", "old caption\n"),  # untouched, byte for byte
    ("overwrite", "{new}"),
    ("append", "old caption, {new}"),
    ("prepend", "{inner}, old caption"),  # followed by text: no closing period
])
def test_existing_caption_policies_and_no_double_append_on_rerun(cap, tmp_path, policy, expected):
    img = make_images(tmp_path, 1)[0]
    new = cap.caption([str(img)], decoding="greedy")[0].text
    side = img.with_suffix(".txt")
    side.write_text("old caption\n", encoding="utf-8")
    s = run_tagging(opts(tmp_path, existing=policy), cap)
    assert (s.written, s.skipped) == ((0, 1) if policy == "skip" else (1, 0))
    assert side.read_text(encoding="utf-8") == expected.format(new=new, inner=new.rstrip("."))
    s = run_tagging(opts(tmp_path, existing=policy), cap)  # resuming the same run never adds the caption twice
    assert s.written == 0 and side.read_text(encoding="utf-8") == expected.format(new=new, inner=new.rstrip("."))
    if policy != "skip":
        assert "journal" in run_tagging(opts(tmp_path, existing=policy, dry_run=True), cap).plan[0].reason
        s = run_tagging(opts(tmp_path, existing=policy, resume=False), cap)  # explicitly not resuming
        assert s.written == 1


def test_mirrored_output_folder_and_custom_suffix(cap, tmp_path):
    make_images(tmp_path / "in", 2)
    make_images(tmp_path / "in" / "a" / "b", 1, start=2)
    before = snapshot(tmp_path / "in")
    s = run_tagging(opts(tmp_path / "in", output_dir=str(tmp_path / "out"), caption_ext=".caption"), cap)
    assert s.written == 3 and snapshot(tmp_path / "in") == before  # nothing written next to the images
    got = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()
                 and ".clipcap" not in p.relative_to(tmp_path / "out").parts)  # the run record: see test_batch_undo
    assert got == [JOURNAL_NAME, "a/b/img02.caption", "img00.caption", "img01.caption"]
    assert (tmp_path / "out" / ".clipcap" / "files.jsonl").is_file()


def test_dry_run_writes_nothing_and_explains(cap, tmp_path):
    imgs = make_images(tmp_path, 4)
    imgs[1].with_suffix(".txt").write_text("mine")
    (tmp_path / "bad.png").write_bytes(b"")
    before = snapshot(tmp_path)
    s = run_tagging(opts(tmp_path, dry_run=True, manifest_jsonl=str(tmp_path / "m.jsonl"),
                         output_dir=None), cap)
    assert snapshot(tmp_path) == before  # no caption, journal, lock or manifest
    # bad.png only fails when decoded
    assert s.dry_run and s.line() == "would write 4, already done (resume) 0, had a caption (policy) 1, failed 0"
    plan = {Path(o.path).name: (o.status, o.reason) for o in s.plan}
    assert plan["img01.png"] == ("skipped", "caption file exists (existing=skip)")
    assert plan["img00.png"] == ("would_write", "create")
    s = run_tagging(opts(tmp_path, dry_run=True, existing="append"), cap)
    assert {Path(o.path).name: o.reason for o in s.plan}["img01.png"] == "append"


# ------------------------------------------------------------------------------------------------ bad input
def test_corrupted_files_fail_alone_with_reasons(cap, tmp_path):
    good = make_images(tmp_path, 2)
    png = good[0].read_bytes()
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "text.jpg").write_text("this is not a picture")
    make_images(tmp_path / "big", 1, size=200)[0].rename(tmp_path / "huge.png")
    (tmp_path / "folder.png").mkdir()  # a folder with an image name is simply not a file: not listed
    jsonl = tmp_path / "m.jsonl"
    s = run_tagging(opts(tmp_path, max_pixels=150 * 150, manifest_jsonl=str(jsonl), recursive=False), cap)
    assert (s.written, s.failed) == (2, 4)
    reasons = {Path(f.path).name: f.reason for f in s.failures}
    assert "empty (0 bytes)" in reasons["zero.png"]
    assert "truncated" in reasons["truncated.png"]
    assert "unrecognised image format" in reasons["text.jpg"]
    assert "too large" in reasons["huge.png"] or "pixels" in reasons["huge.png"]
    assert all(p.with_suffix(".txt").is_file() for p in good)
    assert not any((tmp_path / n).with_suffix(".txt").exists() for n in reasons)
    rows = {Path(r["path"]).name: r for r in map(json.loads, jsonl.read_text().splitlines())}
    assert rows["zero.png"]["status"] == "failed" and rows["zero.png"]["reason"] == reasons["zero.png"]


def test_read_only_target_fails_only_its_files(cap, tmp_path, monkeypatch):
    # Tests run as root, and root ignores permission bits (chmod 0o555 would not stop the write), so a read-only
    # folder is simulated at the write call, with the error the OS gives a normal user.
    make_images(tmp_path / "ro", 2)
    make_images(tmp_path / "rw", 2, start=2)
    real = runner.write_files

    def write_files(items):
        ro = [i for i, (p, _) in enumerate(items) if p.parent.name == "ro"]
        errors = real([it for i, it in enumerate(items) if i not in ro])
        it = iter(errors)
        return [PermissionError(13, "Permission denied") if i in ro else next(it) for i in range(len(items))]

    monkeypatch.setattr(runner, "write_files", write_files)
    s = run_tagging(TagOptions(inputs=[str(tmp_path / "ro"), str(tmp_path / "rw")], workers=0, batch_size=3), cap)
    assert (s.written, s.failed) == (2, 2)
    assert all("Permission denied" in f.reason and "/ro/" in f.path for f in s.failures)
    assert not list((tmp_path / "ro").glob("*.txt")) and len(list((tmp_path / "rw").glob("*.txt"))) == 2
    assert not list((tmp_path / "ro").glob(".*.tmp"))


def test_unwritable_mirror_folder_fails_only_its_files(cap, tmp_path):
    make_images(tmp_path / "in" / "blocked", 1)
    make_images(tmp_path / "in" / "fine", 1, start=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "blocked").write_text("a file where the folder should be")
    s = run_tagging(opts(tmp_path / "in", output_dir=str(tmp_path / "out")), cap)
    assert (s.written, s.failed) == (1, 1) and "cannot create the folder" in s.failures[0].reason


def test_two_images_with_the_same_caption_file(cap, tmp_path):
    make_images(tmp_path, 1)[0].rename(tmp_path / "a.png")
    make_images(tmp_path, 1, ext=".jpg")[0].rename(tmp_path / "a.jpg")
    s = run_tagging(opts(tmp_path), cap)
    assert (s.written, s.failed) == (1, 1)
    assert "also the caption file of" in s.failures[0].reason and s.failures[0].path.endswith("a.png")


# ---------------------------------------------------------------------------------------------- concurrency
def test_worker_processes_give_the_same_captions(cap, tmp_path, monkeypatch):
    from lib_clipcap.batch import loader

    imgs = make_images(tmp_path / "a", 5)
    (tmp_path / "a" / "bad.png").write_bytes(b"junk")
    # The dataset must be picklable for spawn/forkserver workers (what WebUI and server jobs use)...
    ds = pickle.loads(pickle.dumps(loader.ImageFileDataset([str(imgs[0])], cap.clip.preprocess, None)))
    assert ds[0][1].shape == (3, 64, 64)
    # ...but starting a forkserver imports torch and open_clip, ~20 s on this shared 2-core machine; fork exercises
    # the same DataLoader worker path in a fraction of it.
    monkeypatch.setattr(loader, "START_METHOD", "fork")
    s = run_tagging(opts(tmp_path / "a", workers=2, batch_size=2), cap)
    assert (s.written, s.failed) == (5, 1)
    ref = [r.text for r in cap.caption([str(p) for p in imgs], decoding="greedy")]
    assert [p.with_suffix(".txt").read_text() for p in imgs] == ref


def test_stop_request_ends_after_a_batch_and_the_rerun_finishes(cap, tmp_path):
    imgs = make_images(tmp_path, 7)
    polls = []  # should_stop is polled before each batch: stop before the third (the writer may lag behind)
    s = run_tagging(opts(tmp_path, batch_size=2), cap, should_stop=lambda: polls.append(1) or len(polls) > 2)
    assert s.stopped and s.written == 4 and s.failed == 0
    s2 = run_tagging(opts(tmp_path, batch_size=2), cap)
    assert not s2.stopped and s2.written == 7 - s.written and s2.skipped == s.written
    assert all(p.with_suffix(".txt").is_file() for p in imgs)


def test_second_run_on_a_locked_folder_fails_fast(cap, tmp_path):
    make_images(tmp_path, 1)
    with FolderLock(tmp_path):
        with pytest.raises(BatchLockedError, match=rf"being tagged by another run \(PID {os.getpid()}.*{LOCK_NAME}"):
            run_tagging(opts(tmp_path), cap)
    assert not list(tmp_path.glob("*.txt"))
    assert run_tagging(opts(tmp_path), cap).written == 1


def test_session_callable_is_entered_per_batch(cap, tmp_path):
    import contextlib

    make_images(tmp_path, 5)
    entered = []

    @contextlib.contextmanager
    def session():
        entered.append(1)
        yield cap

    s = run_tagging(opts(tmp_path, batch_size=2), session)
    assert s.written == 5 and len(entered) == 1 + 3  # once for the options, then once per batch
