"""Batch tagging without a model: options, text policies, output naming (property tests), discovery, journal, lock,
many-file atomic writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lib_clipcap.batch import BatchInputError, BatchLockedError, PathNotAllowedError, TagOptions
from lib_clipcap.batch.discover import discover, is_within, matches
from lib_clipcap.batch.journal import JOURNAL_NAME, Journal, sha256_bytes
from lib_clipcap.batch.lock import LOCK_NAME, FolderLock
from lib_clipcap.batch.options import DEFAULT_MAX_PIXELS
from lib_clipcap.batch.policy import clean_caption, combine, decorate, final_text, truncate
from lib_clipcap.batch.writer import caption_path, sidecar_name
from lib_clipcap.errors import ClipCapError
from lib_clipcap.fileio import atomic_write_many, stale_temp_files
from lib_clipcap.options_table import OptionError


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------------------------------- options
def test_options_defaults_and_decoding_kwargs():
    o = TagOptions(inputs="folder")
    assert o.inputs == ["folder"] and o.existing == "skip" and o.caption_ext == ".txt" and o.recursive
    kw = o.caption_kwargs()
    assert kw["decoding"] == "greedy" and kw["max_new_tokens"] == 40 and kw["banned_words"] == []  # the table's
    assert "rerank" not in kw
    assert TagOptions(inputs=["x"], rerank="none").caption_kwargs()["rerank"] == "none"
    assert TagOptions(inputs=["x"], banned_words="cat, dog").banned_words == ["cat", "dog"]
    assert TagOptions(inputs=["x"], replace={"a": "b"}).replace == [("a", "b")]
    assert TagOptions(inputs=["x"], replace=[["a", "b"]]).replace == [("a", "b")]
    assert TagOptions(**TagOptions(inputs=["x"], replace=[("a", "b")]).to_dict()) == TagOptions(
        inputs=["x"], replace=[("a", "b")])


def test_max_pixels_default_matches_the_loader():
    from lib_clipcap.images import MAX_IMAGE_PIXELS_DEFAULT

    assert DEFAULT_MAX_PIXELS == MAX_IMAGE_PIXELS_DEFAULT


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "inputs=.*at least one folder"),
    (dict(inputs=["x"], existing="merge"), "existing='merge'.*skip, overwrite, append, prepend"),
    (dict(inputs=["x"], caption_ext="txt"), "caption_ext='txt'.*starting with a dot"),
    (dict(inputs=["x"], caption_ext=".png"), "caption_ext='.png'.*image"),
    (dict(inputs=["x"], caption_ext=".JPG"), "caption_ext='.JPG'.*image"),
    (dict(inputs=["x"], caption_ext="./x"), "path separators"),
    (dict(inputs=["x"], batch_size=0), "batch_size=0"),
    (dict(inputs=["x"], workers=-1), "workers=-1"),
    (dict(inputs=["x"], max_length=0), "max_length=0"),
    (dict(inputs=["x"], replace=[["", "b"]]), "replace="),
    (dict(inputs=["x"], max_new_tokens=-1), "max_new_tokens=-1"),
    (dict(inputs=["x"], decoding="nucleus"), "decoding='nucleus'"),
    (dict(inputs=["x"], decoding="beam", beam_size=2, num_candidates=3), "num_candidates=3.*beam_size"),
    (dict(inputs=["x"], lowercase="yes"), "lowercase='yes'"),
])
def test_invalid_options_name_the_field(kwargs, match):
    with pytest.raises(OptionError, match=match) as e:
        TagOptions(**kwargs)
    assert isinstance(e.value, ValueError) and isinstance(e.value, ClipCapError)


# ------------------------------------------------------------------------------------------------------ policy
def test_clean_caption_order_and_each_option():
    base = dict(inputs=["x"])
    assert clean_caption("  A Dog\non a  sofa. ", TagOptions(**base)) == "A Dog on a sofa."
    assert clean_caption("A Dog.", TagOptions(**base, lowercase=True)) == "a dog."
    assert clean_caption("a dog...", TagOptions(**base, strip_period=True)) == "a dog"
    # lower-casing happens before replacing, so a replacement may bring capitals (a trigger word)
    assert clean_caption("A man walks", TagOptions(**base, lowercase=True, replace=[("a man", "SKS man")])) \
        == "SKS man walks"
    assert clean_caption("a cat and a dog", TagOptions(**base, replace=[("cat", "dog"), ("dog", "fox")])) \
        == "a fox and a fox"  # in order
    assert clean_caption("A Cat sits, cats run", TagOptions(**base, banned_words=["cat"])) == "A sits, cats run"
    assert clean_caption("a red circle on a white background", TagOptions(**base, max_length=14)) == "a red circle"


def test_truncate_at_word_boundaries():
    assert truncate("a red circle", None) == "a red circle"
    assert truncate("a red circle", 12) == "a red circle"
    assert truncate("a red circle", 5) == "a red"
    assert truncate("a red, circle", 7) == "a red"  # dangling comma removed
    assert truncate("abcdefgh", 3) == "abc"  # one long word: hard cut


def test_prefix_suffix_and_existing_policies():
    o = lambda **kw: TagOptions(inputs=["x"], **kw)  # noqa: E731
    assert decorate("a dog", o(prefix="sks", suffix="photo")) == "sks, a dog, photo"
    assert decorate("a dog", o(prefix="sks", separator=" ")) == "sks a dog"
    assert combine("old text\n", "new", o(existing="append")) == "old text, new"
    assert combine("old text", "new", o(existing="prepend", separator=" | ")) == "new | old text"
    assert combine("old", "new", o(existing="overwrite")) == "new"
    assert combine(None, "new", o(existing="append")) == "new"
    assert combine("  \n", "new", o(existing="prepend")) == "new"
    assert final_text("old", "A Dog.", o(existing="append", lowercase=True, strip_period=True, prefix="sks")) \
        == ("a dog", "old, sks, a dog")


def test_a_caption_followed_by_other_text_loses_its_period():
    """The sidecar of a generated image read "mytrigger, a ... background., best quality"."""
    o = lambda **kw: TagOptions(inputs=["x"], **kw)  # noqa: E731
    caption = "a large blue circle on a white background."
    assert decorate(caption, o(prefix="mytrigger", suffix="best quality")) \
        == "mytrigger, a large blue circle on a white background, best quality"
    assert decorate(caption, o(prefix="mytrigger")) == "mytrigger, a large blue circle on a white background."
    assert decorate(caption, o(prefix="mytrigger, ")) == "mytrigger, a large blue circle on a white background."
    assert combine("old caption.", "a dog.", o(existing="append")) == "old caption, a dog."
    assert combine("old caption", "a dog.", o(existing="prepend")) == "a dog, old caption"
    assert final_text(None, "A dog.", o(suffix="best quality"))[1] == "A dog, best quality"


# ------------------------------------------------------------------------------------------------------ naming
_name_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0")
file_names = st.text(_name_chars, min_size=1, max_size=40).filter(lambda s: s not in (".", ".."))
exts = st.sampled_from([".txt", ".caption", ".TXT", ".cap.txt", ".é"])


@settings(max_examples=300, deadline=None)
@given(name=file_names, ext=exts)
def test_sidecar_name_replaces_only_the_last_suffix(name, ext):
    out = sidecar_name(name, ext)
    stem, suffix = os.path.splitext(name)
    assert out == stem + ext
    assert out.endswith(ext) and "/" not in out
    assert out != name or suffix == ext  # never the image's own name unless the suffix already is the caption's


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(file_names, min_size=1, max_size=3), ext=exts, mirror=st.booleans())
def test_caption_paths_on_disk_any_name(tmp_path, parts, ext, mirror):
    """Any (unicode, dotted, spaced, leading-dot) name gets a caption file beside it, or at the mirrored place."""
    assume(all(len(p.encode()) < 200 for p in parts))
    root = tmp_path / "in"
    image = root.joinpath(*parts[:-1]) / (parts[-1] + ".png")
    out_dir = tmp_path / "out" if mirror else None
    out = caption_path(image, caption_ext=ext, root=root, output_dir=out_dir)
    assert out != image
    assert out.name == os.path.splitext(image.name)[0] + ext  # parts[-1] + ext, unless the name is all dots + "png"
    expected_parent = (out_dir / image.parent.relative_to(root)) if mirror else image.parent
    assert out.parent == expected_parent
    # and it is a real, writable, distinct file: write both and read them back
    touch(image, b"img")
    out.parent.mkdir(parents=True, exist_ok=True)
    assert atomic_write_many([(out, "caption é".encode())]) == [None]
    assert out.read_text(encoding="utf-8") == "caption é" and image.read_bytes() == b"img"


@pytest.mark.parametrize("name, expected", [
    ("photo.jpg", "photo.txt"), ("a.b.c.png", "a.b.c.txt"), (".hidden.png", ".hidden.txt"),
    ("with space .webp", "with space .txt"), ("日本語の写真.JPG", "日本語の写真.txt"), ("noext", "noext.txt"),
    ("trailing.", "trailing.txt"), ("archive.tar.gz.png", "archive.tar.gz.txt"),
    ("....png", "....png.txt"),  # a dot-file without a suffix, as os.path.splitext (and is_image_path) see it
])
def test_sidecar_names_examples(name, expected):
    assert sidecar_name(name, ".txt") == expected


# --------------------------------------------------------------------------------------------------- discovery
def test_discovery_recursive_globs_order_and_non_images(tmp_path):
    for rel in ["b.png", "a.jpg", "notes.txt", "sub/c.PNG", "sub/deeper/d.webp", "raw/e.png", "x.gif"]:
        touch(tmp_path / rel)
    rels = lambda o: [i.rel.as_posix() for i in discover(o).items]  # noqa: E731
    assert rels(TagOptions(inputs=[tmp_path])) == ["a.jpg", "b.png", "x.gif", "raw/e.png", "sub/c.PNG",
                                                   "sub/deeper/d.webp"]
    assert rels(TagOptions(inputs=[tmp_path], recursive=False)) == ["a.jpg", "b.png", "x.gif"]
    assert rels(TagOptions(inputs=[tmp_path], include=["*.png"])) == ["b.png", "raw/e.png", "sub/c.PNG"]
    assert rels(TagOptions(inputs=[tmp_path], exclude=["raw/*", "*.gif"])) == ["a.jpg", "b.png", "sub/c.PNG",
                                                                                "sub/deeper/d.webp"]
    assert matches("Sub/IMG.JPG", ["*.jpg"]) and matches("raw/a/b.png", ["raw/*"]) and not matches("a.png", ["b*"])


def test_discovery_files_list_file_and_missing_inputs(tmp_path):
    a = touch(tmp_path / "imgs" / "a.png")
    touch(tmp_path / "imgs" / "b.png")
    lst = tmp_path / "list.txt"
    lst.write_text("# my picks\nimgs/b.png\n\n/nonexistent/z.png\n" + str(a) + "\n", encoding="utf-8")
    found = discover(TagOptions(inputs=[a], list_file=lst))
    assert [i.path for i in found.items] == [a, tmp_path / "imgs" / "b.png"]  # a once, although listed twice
    assert found.items[0].root == a.parent
    assert [(f.path, "listed in" in f.reason) for f in found.failures] == [("/nonexistent/z.png", True)]
    with pytest.raises(BatchInputError, match="input not found: .*missing"):
        discover(TagOptions(inputs=[tmp_path / "missing"]))
    with pytest.raises(BatchInputError, match="list file not found"):
        discover(TagOptions(list_file=tmp_path / "nope.txt"))


def test_discovery_survives_symlink_loops_and_visits_each_file_once(tmp_path):
    touch(tmp_path / "d" / "a.png")
    os.symlink(tmp_path / "d", tmp_path / "d" / "loop")  # d/loop -> d
    os.symlink(tmp_path, tmp_path / "d" / "up")  # d/up -> the parent: another loop
    os.symlink(tmp_path / "d" / "a.png", tmp_path / "alias.png")
    found = discover(TagOptions(inputs=[tmp_path, tmp_path / "d"]))
    assert len(found.items) == 1 and not found.failures


def test_allowed_roots_block_traversal_and_symlink_escapes(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    touch(root / "ok.png")
    secret = touch(outside / "secret.png")
    os.symlink(secret, root / "link.png")
    os.symlink(outside, root / "linkdir")
    roots = [Path(os.path.realpath(root))]
    assert is_within(root / "ok.png", roots) and not is_within(root / ".." / "outside", roots)
    found = discover(TagOptions(inputs=[root]), allowed_roots=roots)
    assert [i.path.name for i in found.items] == ["ok.png"]
    reasons = sorted(f.reason for f in found.failures)
    assert len(reasons) == 2 and all("outside the allowed folders" in r for r in reasons)
    with pytest.raises(PathNotAllowedError, match=r"input .*outside.* is outside the allowed folders \(.*root\)"):
        discover(TagOptions(inputs=[root / ".." / "outside"]), allowed_roots=roots)
    with pytest.raises(PermissionError):
        discover(TagOptions(inputs=[root / "linkdir"]), allowed_roots=roots)


# ----------------------------------------------------------------------------------------------- journal, lock
def test_journal_done_needs_same_signature_unchanged_image_and_intact_caption(tmp_path):
    out = tmp_path / "a.txt"
    j = Journal(tmp_path, "sig1").load()
    j.open()
    j.append([{"out": "a.txt", "image": "a.png", "size": 10, "mtime_ns": 5, "sha256": sha256_bytes(b"cap")}])
    j.close()
    assert not Journal(tmp_path, "sig1").load().is_done(out, 10, 5)  # the caption file was never renamed in
    out.write_bytes(b"cap")
    assert Journal(tmp_path, "sig1").load().is_done(out, 10, 5)
    assert not Journal(tmp_path, "sig1").load().is_done(out, 11, 5)  # image changed
    assert not Journal(tmp_path, "sig2").load().is_done(out, 10, 5)  # other settings
    assert not Journal(tmp_path, "sig1", resume=False).load().is_done(out, 10, 5)
    out.write_bytes(b"edited by hand")
    assert not Journal(tmp_path, "sig1").load().is_done(out, 10, 5)


def test_journal_survives_a_torn_last_line_and_restarts_for_other_settings(tmp_path):
    j = Journal(tmp_path, "sig").load()
    j.open()
    j.append([{"out": "a.txt", "image": "a.png", "size": 1, "mtime_ns": 1, "sha256": "00"}])
    j.close()
    with open(tmp_path / JOURNAL_NAME, "ab") as f:
        f.write(b'{"out": "b.txt", "ima')  # power loss mid-append
    j = Journal(tmp_path, "sig").load()
    assert list(j.entries) == ["a.txt"]
    j.open()
    j.append([{"out": "c.txt", "image": "c.png", "size": 1, "mtime_ns": 1, "sha256": "00"}])
    j.close()
    lines = (tmp_path / JOURNAL_NAME).read_text().splitlines()
    assert [json.loads(x).get("out") for x in lines[1:]] == ["a.txt", "c.txt"]
    j = Journal(tmp_path, "other").load()
    assert j.entries == {}
    j.open()
    j.close()
    assert len((tmp_path / JOURNAL_NAME).read_text().splitlines()) == 1  # a fresh journal for the new settings


def test_lock_is_exclusive_names_the_holder_and_is_released(tmp_path):
    with FolderLock(tmp_path):
        assert (tmp_path / LOCK_NAME).is_file()
        with pytest.raises(BatchLockedError, match=rf"PID {os.getpid()} .*lock file .*{LOCK_NAME}") as e:
            FolderLock(tmp_path).acquire()
        assert isinstance(e.value, ClipCapError)
    assert not (tmp_path / LOCK_NAME).exists()
    FolderLock(tmp_path).acquire().release()


def test_lock_held_by_another_process_then_stale_after_it_dies(tmp_path):
    code = ("import sys, time; from pathlib import Path; from lib_clipcap.batch.lock import FolderLock; "
            "FolderLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(BatchLockedError, match=rf"PID {child.pid}\b"):
            FolderLock(tmp_path).acquire()
    finally:
        child.kill()
        child.wait()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == child.pid  # left behind by kill -9
    lock = FolderLock(tmp_path).acquire()  # stale: taken over
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


# --------------------------------------------------------------------------------------------------- fileio
def test_atomic_write_many_reports_per_file_errors_and_keeps_modes(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("old")
    os.chmod(a, 0o640)
    blocked = tmp_path / "file"
    blocked.write_text("x")
    errors = atomic_write_many([(a, b"new"), (blocked / "b.txt", b"y"), (tmp_path / "c.txt", b"c")])
    assert errors[0] is None and errors[2] is None and isinstance(errors[1], OSError)
    assert a.read_bytes() == b"new" and a.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "c.txt", "file"]  # no temporary file left


def test_stale_temp_files_finds_only_our_leftovers(tmp_path):
    for name in [".a.txt.abcd1234.tmp", ".b.txt.zz_9zz99.tmp", ".a.txt.tmp", "a.txt", ".other.txt.abcd1234.tmp"]:
        (tmp_path / name).write_text("")
    found = sorted(p.name for p in stale_temp_files(tmp_path, {"a.txt", "b.txt"}))
    assert found == [".a.txt.abcd1234.tmp", ".b.txt.zz_9zz99.tmp"]


# --------------------------------------------------------------------------------------------------- manifests
def test_manifest_names_are_case_folded_jsonl_or_csv_and_never_dot_files():
    for name, value in (("manifest_csv", "m.CSV"), ("manifest_jsonl", "sub/Run.JSONL"), ("manifest_csv", "a.b.csv")):
        assert getattr(TagOptions(inputs=["x"], **{name: value}), name) == value  # kept as typed
    for name, value in (("manifest_csv", ".bashrc"), ("manifest_csv", "x.png"), ("manifest_jsonl", "run.sh"),
                        ("manifest_csv", ".csv"), ("manifest_jsonl", ".clipcap-journal.jsonl"),
                        ("manifest_csv", "m.jsonl"), ("manifest_jsonl", "m.csv"), ("manifest_csv", "m\x1b.csv")):
        with pytest.raises(OptionError, match=f"{name}=") as e:
            TagOptions(inputs=["x"], **{name: value})
        assert e.value.field == name


def test_manifest_opens_only_new_files_or_its_own(tmp_path):
    from lib_clipcap.batch.options import FileOutcome
    from lib_clipcap.batch.writer import Manifest

    row = FileOutcome("a.png", "written", "a.txt", "", "a cat", -0.5, None)
    m = Manifest(tmp_path / "m.jsonl", tmp_path / "m.csv", model="demo")
    m.write([row])
    m.close()
    (tmp_path / "m.csv").write_bytes((tmp_path / "m.csv").read_bytes() + b'x.png,torn')  # a row cut by a crash
    m = Manifest(tmp_path / "m.jsonl", tmp_path / "m.csv", model="demo")  # ours: extended
    m.write([row])
    m.close()
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == "path,output,status,caption,model,score,keywords,reason,tags,tags_output"  # a new file's layout
    assert lines[2] == "x.png,torn"
    assert lines[3].startswith("a.png,a.txt,written") and len((tmp_path / "m.jsonl").read_text().splitlines()) == 2
    (tmp_path / "empty.csv").touch()  # a run that created it and wrote nothing more (or a user's touch): fine
    Manifest(None, tmp_path / "empty.csv", model="demo").close()
    assert (tmp_path / "empty.csv").read_text().startswith("path,output")
    foreign = touch(tmp_path / "prices.csv", b"name,price\nfoo,3\n")
    with pytest.raises(OptionError, match="was not written by ClipCap") as e:
        Manifest(tmp_path / "new.jsonl", foreign, model="demo")
    assert e.value.field == "manifest_csv" and foreign.read_bytes() == b"name,price\nfoo,3\n"
    assert (tmp_path / "new.jsonl").exists() and (tmp_path / "new.jsonl").stat().st_size == 0  # closed, not leaked
    os.symlink(touch(tmp_path / ".profile", b"PATH=x\n"), tmp_path / "link.csv")
    with pytest.raises(OptionError, match="symlink"):
        Manifest(None, tmp_path / "link.csv", model="demo")
    assert (tmp_path / ".profile").read_bytes() == b"PATH=x\n"
