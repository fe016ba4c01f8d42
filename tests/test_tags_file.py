"""Tags in the manifests and the separate ``.tags`` file (issue 22): manifest layouts (a legacy manifest is resumed
and appended to in its own layout, byte for byte; a new one carries every tag with its score and round-trips
exactly; the Parquet reader takes both), and ``tags_file`` under every existing-caption policy, with resume and undo
restoring every file byte for byte."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from _batch_data import one_torch_thread, shapes_pngs
from lib_clipcap.batch import TagOptions, run_tagging
from lib_clipcap.batch.options import FileOutcome
from lib_clipcap.batch.runs import STATE_DIR, undo_run
from lib_clipcap.batch.writer import LEGACY_MANIFEST_COLUMNS, MANIFEST_COLUMNS, Manifest, read_manifest
from lib_clipcap.options_table import OptionError

HAND_TXT = b"my own words"
HAND_TAGS = b"hand tag, another tag"
# img01 of seed 3 is "a large yellow triangle on a black background." (the bundled models are committed)
IMG01_TXT = b"sks, a large yellow triangle on a black background."
IMG01_TAGS = b"sks, large, yellow, black background, triangle"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """One models folder for the module: the shapes vocabulary's text features are encoded once, then cached."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def tag_set(tmp_path, monkeypatch, models_dir):
    """4 shapes images (seed 3); img00 has a hand-written caption and a hand-written .tags file."""
    monkeypatch.setenv("CLIPCAP_MODELS_DIR", str(models_dir))
    imgs = shapes_pngs(tmp_path / "set", 4, seed=3, prefix="img")
    imgs[0].with_suffix(".txt").write_bytes(HAND_TXT)
    imgs[0].with_suffix(".tags").write_bytes(HAND_TAGS)
    return tmp_path / "set", imgs


def opts(folder, **kw) -> TagOptions:
    kw.setdefault("workers", 0)
    kw.setdefault("batch_size", 2)
    kw.setdefault("tag_vocabulary", ["shapes"])
    kw.setdefault("triggers", ["sks"])
    return TagOptions(inputs=[str(folder)], **kw)


def files(folder: Path, *suffixes: str) -> dict[str, bytes]:
    """The sidecars under ``folder`` (state folder and journal left out) with their bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix in suffixes and p.name != STATE_DIR}


def copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


# --------------------------------------------------------------------------------------------------- options
def test_tags_file_options_are_checked_and_named():
    with pytest.raises(OptionError) as e:
        TagOptions(inputs=["x"], tags_file=True)  # content caption: no tags to put in a file
    assert e.value.field == "tags_file" and "content" in e.value.reason
    with pytest.raises(OptionError) as e:
        TagOptions(inputs=["x"], content="tags", tags_file=True, caption_ext=".TAGS")
    assert e.value.field == "tags_file" and ".TAGS" in e.value.reason
    with pytest.raises(OptionError) as e:
        TagOptions(inputs=["x"], content="tags", tags_file="yes")
    assert e.value.field == "tags_file"
    both = TagOptions(inputs=["x"], content="caption+tags", tags_file=True)
    assert both.outputs() == [(".txt", "caption"), (".tags", "tags")]
    assert TagOptions(inputs=["x"], content="tags", tags_file=True).outputs() == [(".tags", "tags")]
    assert TagOptions(inputs=["x"], content="tags").outputs() == [(".txt", "tags")]
    # journals of runs without the option still resume: the field is absent from the signature when off
    assert both.signature_fields()["tags_file"] is True
    assert "tags_file" not in TagOptions(inputs=["x"], content="caption+tags").signature_fields()
    assert TagOptions(**both.to_dict()) == both


def test_tags_file_on_the_command_line_the_api_check_and_the_batch_tab(tmp_path, capsys):
    import argparse

    from lib_clipcap.batch.cli import add_arguments, options_from_args, run
    from lib_clipcap.batch.jobs import JobManager
    from lib_clipcap.batch.ui import BATCH_FIELDS, BatchUI

    p = argparse.ArgumentParser()
    add_arguments(p)
    o = options_from_args(p.parse_args(["ds", "--content", "caption+tags", "--tags-file"]))
    assert o.tags_file and o.content == "caption+tags"
    assert run(p.parse_args([str(tmp_path), "--tags-file"])) == 2
    from lib_clipcap.batch.cli import _check_engine_args

    assert _check_engine_args(p.parse_args(["ds", "--engine", "ray", "--content", "tags", "--tags-file"])) is None
    assert "--tags-file True is invalid" in capsys.readouterr().err  # the flag as typed, not the field
    # the API job: a .tags file is a caption file, so the allowed suffixes must hold .tags
    (tmp_path / "ds").mkdir()
    jobs = JobManager(None, [tmp_path], caption_exts=[".txt"])
    with pytest.raises(OptionError) as e:
        jobs.check_options(TagOptions(inputs=[str(tmp_path / "ds")], content="tags", tags_file=True))
    assert e.value.field == "tags_file" and ".tags" in e.value.reason
    ok = JobManager(None, [tmp_path]).check_options(TagOptions(inputs=[str(tmp_path / "ds")], content="tags",
                                                               tags_file=True))
    assert ok.tags_file
    # the batch tab shows it, and a job gets it
    assert "tags_file" in [name for name, *_ in BATCH_FIELDS]
    built = BatchUI(None).make_tag_options(str(tmp_path), {}, {"content": "caption+tags", "tags_file": True})
    assert built.tags_file and built.content == "caption+tags"


# --------------------------------------------------------------------------------------------------- manifests
def _legacy_jsonl_row(o: FileOutcome, model: str) -> bytes:
    """A JSONL row exactly as the version before tags wrote it."""
    row = {"path": o.path, "output": o.output, "status": o.status, "caption": o.caption, "model": model,
           "score": o.score, "keywords": o.keywords, "reason": o.reason or None}
    return (json.dumps(row, ensure_ascii=False) + "\n").encode()


def _legacy_csv_row(o: FileOutcome, model: str) -> bytes:
    buf = io.StringIO()
    cells = [o.path, o.output, o.status, o.caption, model, o.score, ", ".join(o.keywords) if o.keywords else None,
             o.reason or None]
    csv.writer(buf, lineterminator="\n").writerow(["" if c is None else c for c in cells])
    return buf.getvalue().encode()


OUTCOMES = [
    FileOutcome("a.png", "written", "a.txt", "", "sks, red, circle", -0.25, ["red"],
                tags=[("red", 0.1 + 0.2), ("circle", 1 / 3)], tags_output="a.tags"),
    FileOutcome("b, \"quoted\".png", "failed", "b.txt", "not an image"),
    FileOutcome("c.png", "written", "c.txt", "", "a cat", None, None, tags=[("weird, \"tag\"", 2.5e-17), ("x", None)]),
]


def test_a_legacy_manifest_is_resumed_and_appended_to_in_its_own_layout_byte_for_byte(tmp_path):
    first = FileOutcome("old.png", "written", "old.txt", "", "an old caption", -1.5, None)
    jsonl, csv_path = tmp_path / "run.jsonl", tmp_path / "run.csv"
    old_jsonl = _legacy_jsonl_row(first, "demo")
    old_csv = (",".join(LEGACY_MANIFEST_COLUMNS) + "\n").encode() + _legacy_csv_row(first, "demo")
    jsonl.write_bytes(old_jsonl)
    csv_path.write_bytes(old_csv)
    m = Manifest(jsonl, csv_path, model="demo")
    assert m.layouts == [LEGACY_MANIFEST_COLUMNS, LEGACY_MANIFEST_COLUMNS]
    m.write(OUTCOMES)
    m.close()
    assert jsonl.read_bytes() == old_jsonl + b"".join(_legacy_jsonl_row(o, "demo") for o in OUTCOMES)
    assert csv_path.read_bytes() == old_csv + b"".join(_legacy_csv_row(o, "demo") for o in OUTCOMES)
    for path in (jsonl, csv_path):  # the reader takes the legacy layout: the new columns are None
        rows = read_manifest(path)
        assert [r["path"] for r in rows] == ["old.png"] + [o.path for o in OUTCOMES]
        assert all(r["tags"] is None and r["tags_output"] is None for r in rows)
        assert set(rows[0]) == set(MANIFEST_COLUMNS) and rows[1]["score"] == -0.25


def test_a_legacy_manifest_keeps_its_layout_through_a_real_tags_run(demo_captioner, tag_set):
    folder, _ = tag_set
    first = FileOutcome("old.png", "written", "old.txt", "", "an old caption", -1.5, None)
    jsonl = folder.parent / "run.jsonl"
    jsonl.write_bytes(_legacy_jsonl_row(first, "shapes-demo"))
    s = run_tagging(opts(folder, content="tags", tags_file=True, manifest_jsonl=str(jsonl)), demo_captioner)
    assert (s.written, s.kept) == (3, 1), s.failures
    lines = jsonl.read_bytes().splitlines()
    assert len(lines) == 5 and all(list(json.loads(line)) == list(LEGACY_MANIFEST_COLUMNS) for line in lines)


def test_a_new_manifest_carries_every_tag_with_its_score_and_round_trips_exactly(tmp_path):
    jsonl, csv_path = tmp_path / "run.jsonl", tmp_path / "run.csv"
    m = Manifest(jsonl, csv_path, model="demo")
    assert m.layouts == [MANIFEST_COLUMNS, MANIFEST_COLUMNS]
    m.write(OUTCOMES)
    m.close()
    first = json.loads(jsonl.read_bytes().splitlines()[0])
    assert list(first) == list(MANIFEST_COLUMNS)
    assert first["tags"] == [["red", 0.1 + 0.2], ["circle", 1 / 3]] and first["tags_output"] == "a.tags"
    header, row = csv_path.read_text(encoding="utf-8").splitlines()[:2]
    assert header == ",".join(MANIFEST_COLUMNS)
    assert row.endswith(',"[[""red"", 0.30000000000000004], [""circle"", 0.3333333333333333]]",a.tags')
    for path in (jsonl, csv_path):
        rows = read_manifest(path)
        assert [r["tags"] for r in rows] == [o.tags for o in OUTCOMES]  # every float exactly as written
        assert [r["tags_output"] for r in rows] == [o.tags_output for o in OUTCOMES]
        assert [(r["path"], r["status"], r["caption"], r["reason"]) for r in rows] == [
            (o.path, o.status, o.caption, o.reason or None) for o in OUTCOMES]
    # a reopened new manifest stays in the new layout; a foreign file is still refused
    Manifest(jsonl, csv_path, model="demo").close()
    (tmp_path / "mine.csv").write_text("path,output,status\n", encoding="utf-8")
    with pytest.raises(OptionError, match="was not written by ClipCap"):
        Manifest(None, tmp_path / "mine.csv", model="demo")
    with pytest.raises(ValueError, match="not a ClipCap manifest"):
        read_manifest(tmp_path / "mine.csv")


def test_a_tags_run_writes_the_tags_and_scores_the_library_gives(demo_captioner, tag_set):
    from lib_clipcap.tags import tag_images

    folder, imgs = tag_set
    jsonl, csv_path = folder.parent / "run.jsonl", folder.parent / "run.csv"
    reported = {}
    s = run_tagging(opts(folder, content="caption+tags", tags_file=True, manifest_jsonl=str(jsonl),
                         manifest_csv=str(csv_path), existing="overwrite"), demo_captioner,
                    on_file=lambda o: reported.setdefault(Path(o.path).name, o.tags))
    assert s.written == 4, s.failures
    want = tag_images(demo_captioner, imgs, "shapes", cache=None)
    for path in (jsonl, csv_path):
        rows = {Path(r["path"]).name: r for r in read_manifest(path)}
        for img, tags in zip(imgs, want):
            r = rows[img.name]
            assert r["tags"] == reported[img.name]  # exactly the run's scores
            assert [t for t, _ in r["tags"]] == [t.tag for t in tags]  # the library's tags, in its order
            assert [s for _, s in r["tags"]] == pytest.approx([t.score for t in tags], abs=1e-5)  # (other batching)
            assert r["output"] == str(img.with_suffix(".txt")) and r["tags_output"] == str(img.with_suffix(".tags"))
        assert rows["img01.png"]["caption"] == "a large yellow triangle on a black background."


def test_the_parquet_reader_takes_legacy_and_new_parts(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from lib_clipcap.distributed.manifest import (COLUMNS, LEGACY_COLUMNS, ParquetManifest, _schema, done_images,
                                                  folder_layout, read_manifest as read_parquet)

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    old = {"path": "old.png", "output": "old.txt", "status": "written", "caption": "an old caption",
           "text": "an old caption", "model": "demo", "score": -1.0, "keywords": None, "reason": None, "size": 10,
           "mtime_ns": 20, "signature": "sig"}
    pq.write_table(pa.Table.from_pylist([old], schema=_schema(LEGACY_COLUMNS)),
                   legacy / "part-20240101T000000Z-aaaaaaaa-00000.parquet")
    assert folder_layout(legacy) == LEGACY_COLUMNS and folder_layout(tmp_path / "new") == COLUMNS
    options = TagOptions(inputs=["x"], content="tags")
    for folder in (legacy, tmp_path / "new"):
        m = ParquetManifest(folder, model="demo", signature="sig", options=options, stats={"a.png": (1, 2)})
        m.write(OUTCOMES[:1])
        m.close()
    # the legacy folder's new part keeps its layout: one schema for the whole folder
    assert {tuple(pq.read_schema(p).names) for p in legacy.iterdir()} == {LEGACY_COLUMNS}
    assert tuple(pq.read_schema(next((tmp_path / "new").iterdir())).names) == COLUMNS
    assert done_images(legacy, "sig") == {"old.png": (10, 20), "a.png": (1, 2)}
    assert done_images(tmp_path / "new", "sig") == {"a.png": (1, 2)}
    rows = read_parquet(legacy).to_pylist()
    assert [r["path"] for r in rows] == ["old.png", "a.png"] and all(r["tags"] is None for r in rows)
    (new_row,) = read_parquet(tmp_path / "new").to_pylist()
    assert new_row["tags"] == [{"tag": "red", "score": 0.1 + 0.2}, {"tag": "circle", "score": 1 / 3}]
    assert new_row["tags_output"] == "a.tags"
    # a folder holding both layouts (parts copied together) reads as one table
    shutil.copy(next((tmp_path / "new").iterdir()), legacy / "part-20990101T000000Z-bbbbbbbb-00000.parquet")
    mixed = read_parquet(legacy)
    assert mixed.column_names == list(COLUMNS) and len(mixed) == 3
    assert done_images(legacy, "sig") == {"old.png": (10, 20), "a.png": (1, 2)}


# --------------------------------------------------------------------------------------------------- .tags file
def test_caption_and_tags_go_to_their_own_files(demo_captioner, tag_set):
    folder, imgs = tag_set
    s = run_tagging(opts(folder, content="caption+tags", tags_file=True), demo_captioner)
    assert (s.written, s.kept, s.failed) == (3, 1, 0), s.failures
    got = files(folder, ".txt", ".tags")
    assert got["img00.txt"] == HAND_TXT and got["img00.tags"] == HAND_TAGS  # existing=skip, for each file
    assert got["img01.txt"] == IMG01_TXT and got["img01.tags"] == IMG01_TAGS
    assert sorted(got) == sorted(f"img0{i}{ext}" for i in range(4) for ext in (".txt", ".tags"))
    # only the .tags file with content tags: no caption file is created or touched
    for p in folder.glob("img0[123].t*"):
        p.unlink()
    s = run_tagging(opts(folder, content="tags", tags_file=True), demo_captioner)
    assert (s.written, s.kept) == (3, 1), s.failures
    got = files(folder, ".txt", ".tags")
    assert sorted(got) == ["img00.tags", "img00.txt", "img01.tags", "img02.tags", "img03.tags"]
    assert got["img01.tags"] == IMG01_TAGS and got["img00.txt"] == HAND_TXT


def test_a_dry_run_and_a_preview_say_what_each_file_gets(demo_captioner, tag_set):
    folder, _ = tag_set
    before = files(folder, ".txt", ".tags")
    s = run_tagging(opts(folder, content="caption+tags", tags_file=True, dry_run=True), None, model_name="demo")
    notes = {Path(o.path).name: (o.status, o.reason) for o in s.plan}
    assert notes["img01.png"] == ("would_write", "img01.txt: create; img01.tags: create")
    assert notes["img00.png"][0] == "skipped" and "img00.tags: caption file exists" in notes["img00.png"][1]
    s = run_tagging(opts(folder, content="caption+tags", tags_file=True, existing="append", preview=2),
                    demo_captioner)
    shown = {Path(o.path).name: o for o in s.plan if o.status == "would_write"}
    assert shown["img00.png"].text.startswith("sks, my own words, ")
    assert shown["img00.png"].tags_text.startswith("sks, hand tag, another tag, ")
    assert shown["img01.png"].text == IMG01_TXT.decode() and shown["img01.png"].tags_text == IMG01_TAGS.decode()
    assert files(folder, ".txt", ".tags") == before  # nothing written


@pytest.mark.parametrize("policy", ["skip", "overwrite", "append", "prepend"])
def test_each_policy_treats_the_tags_file_as_a_caption_file_and_undo_restores_it(demo_captioner, tag_set,
                                                                                tmp_path, policy):
    folder, _ = tag_set
    original = files(folder, ".txt", ".tags")
    # the references: the same policy on a caption file of each kind, without tags_file
    as_caption = copy(folder, tmp_path / "as_caption")
    as_tags = copy(folder, tmp_path / "as_tags")
    for ref, kw in ((as_caption, {"content": "caption"}), (as_tags, {"content": "tags", "caption_ext": ".tags"})):
        assert run_tagging(opts(ref, existing=policy, **kw), demo_captioner).failed == 0
    s = run_tagging(opts(folder, content="caption+tags", tags_file=True, existing=policy), demo_captioner)
    assert s.failed == 0, s.failures
    got = files(folder, ".txt", ".tags")
    assert {k: v for k, v in got.items() if k.endswith(".txt")} == files(as_caption, ".txt")
    assert {k: v for k, v in got.items() if k.endswith(".tags")} == files(as_tags, ".tags")
    if policy != "skip":
        assert got["img00.tags"] != HAND_TAGS and got["img00.txt"] != HAND_TXT
    # a re-run replaces the tool's own text in both files, never adds a second copy
    again = run_tagging(opts(folder, content="caption+tags", tags_file=True, existing=policy, resume=False),
                        demo_captioner)
    assert again.failed == 0 and files(folder, ".txt", ".tags") == got
    for summary in (again, s):  # newest first
        for run_id in summary.run_ids.values():
            report = undo_run(folder, run_id)
            assert report.complete, report.refused
    assert files(folder, ".txt", ".tags") == original  # byte for byte: hand files back, created ones gone


def test_an_interrupted_run_resumes_both_files_and_a_rerun_never_duplicates(demo_captioner, tag_set, tmp_path):
    folder, _ = tag_set
    reference = copy(folder, tmp_path / "ref")
    run_tagging(opts(reference, content="caption+tags", tags_file=True, existing="append"), demo_captioner)
    polls = []

    def stop_after_one_batch() -> bool:
        polls.append(1)
        return len(polls) > 1

    first = run_tagging(opts(folder, content="caption+tags", tags_file=True, existing="append"), demo_captioner,
                        should_stop=stop_after_one_batch)
    assert first.stopped and first.written == 2
    rest = run_tagging(opts(folder, content="caption+tags", tags_file=True, existing="append"), demo_captioner)
    assert (rest.resumed, rest.written, rest.failed) == (2, 2, 0), rest.failures
    assert files(folder, ".txt", ".tags") == files(reference, ".txt", ".tags")
    # one file of an image gone: only that file is written again, its sibling is resumed as it is
    done = files(folder, ".txt", ".tags")
    (folder / "img02.tags").unlink()
    txt_mtime = (folder / "img02.txt").stat().st_mtime_ns
    again = run_tagging(opts(folder, content="caption+tags", tags_file=True, existing="append"), demo_captioner)
    assert (again.resumed, again.written) == (3, 1), again.failures
    assert files(folder, ".txt", ".tags") == done and (folder / "img02.txt").stat().st_mtime_ns == txt_mtime
    # the same settings once more: everything is done
    last = run_tagging(opts(folder, content="caption+tags", tags_file=True, existing="append"), demo_captioner)
    assert (last.resumed, last.written) == (4, 0) and files(folder, ".txt", ".tags") == done


def test_a_tags_file_with_no_tag_fails_its_image_but_keeps_the_caption(demo_captioner, tag_set):
    folder, _ = tag_set
    s = run_tagging(opts(folder, content="caption+tags", tags_file=True, tag_threshold=1.0, existing="overwrite",
                         tag_scoring="cosine"), demo_captioner)
    assert s.failed == 4 and all("tags: no tag reached the threshold" in f.reason for f in s.failures)
    got = files(folder, ".txt", ".tags")
    assert got["img01.txt"] == IMG01_TXT and "img01.tags" not in got and got["img00.tags"] == HAND_TAGS
