"""Caption review (lib_clipcap.review): scanning, flags, scores, the feature cache, atomic edits, undo, bulk edits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lib_clipcap.review import flags as F
from lib_clipcap.review import (
    CaptionTextError,
    ReviewScorer,
    filter_rows,
    plan_bulk,
    save_captions,
    scan_folder,
    sort_rows,
    undo_depth,
    undo_last,
)

ROOT = Path(__file__).resolve().parents[1]


def _render(path: Path, seed: int, index: int) -> str:
    from lib_clipcap.shapes import make_scene

    scene = make_scene(seed, index)
    scene.render().save(path)
    return scene.captions[0]


@pytest.fixture()
def shapes_folder(tmp_path):
    """Six shape images with their own captions (three in a sub-folder), one image without a caption."""
    folder = tmp_path / "ds"
    (folder / "sub").mkdir(parents=True)
    truths = {}
    for i in range(7):
        img = folder / ("sub" if i >= 4 else "") / f"im{i}.png"
        truths[img.name] = _render(img, 3, i)
        if i < 6:
            img.with_suffix(".txt").write_text(truths[img.name], encoding="utf-8")
    return folder, truths


@pytest.fixture(scope="module")
def grammar(tiny_clip):
    from lib_clipcap.grammar import bundled_grammar_for

    head = bundled_grammar_for(tiny_clip)
    assert head is not None
    return head


# ----------------------------------------------------------------------------------------------------- flags
def test_flags_on_a_crafted_folder(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(12):
        _render(folder / f"{i:02d}.png", 1, i)
    texts = {
        "00": "sks, a red circle on a white background.",
        "01": "sks, a blue square on a black background.",
        "02": "sks, a green triangle.",
        "03": "sks, a photo",            # 03-05: one caption shared by three images
        "04": "SKS,  a photo ",
        "05": "sks, a photo",
        "06": "sks,",                    # the trigger word alone
        "07": "   ",                     # blank
        "09": "sks, " + "a large red circle and " * 20 + "a square.",
    }
    for stem, text in texts.items():
        (folder / f"{stem}.txt").write_text(text, encoding="utf-8")
    (folder / "08.txt").write_bytes(b"sks, caf\xe9 au lait")  # Latin-1, not UTF-8
    (folder / "10.txt").write_text("sks, two lines\nof caption", encoding="utf-8")
    # 11 has no caption file
    table = scan_folder(folder)
    by = {Path(r.image).stem: r for r in table.rows}
    assert table.triggers == ["sks"]
    assert by["11"].flags == ["missing"] and by["11"].caption is None
    assert by["07"].flags == ["empty"]
    assert by["08"].flags == ["non_utf8"] and not by["08"].utf8 and "\ufffd" in by["08"].caption
    assert {s for s, r in by.items() if "duplicate" in r.flags} == {"03", "04", "05"}
    assert {s for s, r in by.items() if "trigger_only" in r.flags} == {"06"}
    assert by["09"].tokens > F.DEFAULT_TOKEN_LIMIT and "too_long" in by["09"].flags
    assert "control_chars" in by["10"].flags
    assert by["00"].flags == [] and by["01"].flags == [] and by["02"].flags == []
    assert table.summary()["duplicate"] == 3
    # A higher token limit and a given trigger change the verdicts.
    table = scan_folder(folder, token_limit=150, triggers=["a photo"], duplicate_min=4)
    by = {Path(r.image).stem: r for r in table.rows}
    assert "too_long" not in by["09"].flags
    assert {s for s, r in by.items() if "trigger_only" in r.flags} == set()  # "sks, a photo" is not only the trigger
    assert not any("duplicate" in r.flags for r in table.rows)
    # Filters.
    assert {Path(r.image).stem for r in filter_rows(table.rows, flags=["missing", "empty"])} == {"11", "07"}
    assert {Path(r.image).stem for r in filter_rows(table.rows, text=r"blue|green", regex=True)} == {"01", "02"}


def test_duplicates_are_not_a_trigger():
    caps = ["a cat", "a cat", "a cat", "a dog on grass"]
    assert F.detect_trigger(caps) == []
    assert F.duplicate_keys(caps) == {"a cat": 3}


def test_control_characters_are_refused():
    for bad in ("two\nlines", "tab\there", "cr\r", "nul\x00"):
        with pytest.raises(CaptionTextError, match="control character"):
            F.check_caption_text(bad)
    assert F.check_caption_text("ünïcode, fine.") == "ünïcode, fine."


def test_output_dir_mirror_and_reference_source(tmp_path):
    images = tmp_path / "images"
    (images / "a").mkdir(parents=True)
    _render(images / "a" / "x.png", 2, 0)
    _render(images / "y.jpg", 2, 1)
    out = tmp_path / "captions"
    (out / "a").mkdir(parents=True)
    (out / "a" / "x.txt").write_text("mirrored caption", encoding="utf-8")
    (images / "a" / "x.ref").write_text("reference caption", encoding="utf-8")
    table = scan_folder(images, output_dir=str(out), ref_ext=".ref", ref_dir=str(images))
    by = {r.rel: r for r in table.rows}
    assert by["a/x.png"].caption == "mirrored caption"
    assert by["a/x.png"].caption_file == str(out / "a" / "x.txt")
    assert by["a/x.png"].journal_root == str(out)
    assert by["a/x.png"].ref_caption == "reference caption"
    assert by["y.jpg"].flags == ["missing"]


# ---------------------------------------------------------------------------------------------------- scores
def test_scores_agree_with_lib_clipcap_scoring(shapes_folder, tiny_clip, grammar, tmp_path):
    from lib_clipcap import scoring

    folder, truths = shapes_folder
    for i in range(3):  # a reference caption for some images
        (folder / f"im{i}.ref").write_text(truths[f"im{(i + 1) % 3}.png"], encoding="utf-8")
    table = scan_folder(folder, ref_ext=".ref", ref_dir=str(folder))
    ReviewScorer(tiny_clip, grammar, batch_size=4).score(table)
    rows = [r for r in table.rows if r.caption]
    assert len(rows) == 6
    expect = scoring.clip_score(tiny_clip, [r.image for r in rows], [r.caption for r in rows])
    assert [r.clip_score for r in rows] == pytest.approx(expect.tolist(), abs=1e-5)
    probs = grammar.probability([r.caption for r in rows]).cpu()
    assert [r.grammar for r in rows] == pytest.approx(probs.tolist(), abs=1e-5)
    with_ref = [r for r in rows if r.ref_caption]
    assert len(with_ref) == 3
    expect_ref = scoring.ref_clip_score(tiny_clip, [r.image for r in with_ref], [r.caption for r in with_ref],
                                        [[r.ref_caption] for r in with_ref])
    assert [r.ref_clip_score for r in with_ref] == pytest.approx(expect_ref.tolist(), abs=1e-5)
    # A head on CLIP's own text features (not fine-tuned) is fed the features CLIP-S encoded: same probabilities.
    import torch

    from lib_clipcap.grammar import GrammarConfig, GrammarHead, GrammarScorer

    torch.manual_seed(0)
    plain = GrammarScorer(GrammarHead(tiny_clip.embed_dim, 32), tiny_clip,
                          GrammarConfig(clip_model=tiny_clip.name, clip_pretrained=None, embed_dim=tiny_clip.embed_dim,
                                        hidden=32))
    table3 = scan_folder(folder)
    ReviewScorer(tiny_clip, plain).score(table3)
    rows3 = [r for r in table3.rows if r.caption]
    assert [r.grammar for r in rows3] == pytest.approx(plain.probability([r.caption for r in rows3]).tolist(),
                                                       abs=1e-5)
    # The same holds with Hessel's prefix.
    table2 = scan_folder(folder)
    ReviewScorer(tiny_clip, None, prefix=scoring.HESSEL_PREFIX, use_cache=False).score(table2)
    rows2 = [r for r in table2.rows if r.caption]
    expect2 = scoring.clip_score(tiny_clip, [r.image for r in rows2], [r.caption for r in rows2],
                                 prefix=scoring.HESSEL_PREFIX)
    assert [r.clip_score for r in rows2] == pytest.approx(expect2.tolist(), abs=1e-5)
    assert all(r.grammar is None for r in rows2)


def test_worst_first_puts_the_wrong_caption_first(shapes_folder, tiny_clip):
    folder, truths = shapes_folder
    # Swap in a caption that describes another picture entirely.
    (folder / "im2.txt").write_text("a large green triangle on a black background.", encoding="utf-8")
    (folder / "im2.txt").write_text(truths["im0.png"] if truths["im0.png"] != truths["im2.png"] else "x",
                                    encoding="utf-8")
    table = scan_folder(folder)
    ReviewScorer(tiny_clip).score(table)
    ordered = sort_rows(table.rows, "clip")
    assert ordered[0].flags == ["missing"]  # nothing to score: first
    scored = [r.clip_score for r in ordered if r.clip_score is not None]
    assert scored == sorted(scored)
    assert sort_rows(table.rows, "length")[0].caption is None


def test_cache_reused_then_invalidated_by_an_image_change(shapes_folder, tiny_clip):
    folder, _ = shapes_folder
    table = scan_folder(folder)
    first = ReviewScorer(tiny_clip)
    first.score(table)
    assert first.stats["images_encoded"] == 7
    cache_files = list((folder / ".clipcap-review-cache").glob("features-*.safetensors"))
    assert len(cache_files) == 1
    before = {r.rel: r.clip_score for r in table.rows}

    second = ReviewScorer(tiny_clip)  # a new process would start like this: only the disk cache
    second.score(scan_folder(folder))
    assert second.stats == {"images_encoded": 0, "images_cached": 7, "texts_encoded": 6}

    # Same name, new pixels (and a stat that could fool a size-only check: re-render at the same size).
    img = folder / "im1.png"
    _render(img, 99, 5)
    os.utime(img, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    table3 = scan_folder(folder)
    third = ReviewScorer(tiny_clip)
    third.score(table3)
    assert third.stats["images_encoded"] == 1 and third.stats["images_cached"] == 6
    after = {r.rel: r.clip_score for r in table3.rows}
    assert after["im1.png"] != pytest.approx(before["im1.png"], abs=1e-4)
    assert {k: v for k, v in after.items() if k != "im1.png"} == pytest.approx(
        {k: v for k, v in before.items() if k != "im1.png"}, abs=1e-6)

    # Scoring a few rows (after an edit) leaves the other images' features in the cache.
    ReviewScorer(tiny_clip).score(table3.rows[:2])
    fourth = ReviewScorer(tiny_clip)
    fourth.score(scan_folder(folder))
    assert fourth.stats["images_encoded"] == 0 and fourth.stats["images_cached"] == 7

    # Another model (another preprocessing) never reads these features.
    from lib_clipcap.review.cache import cache_key

    class Other:
        name, pretrained, dtype, embed_dim = tiny_clip.name, tiny_clip.pretrained, tiny_clip.dtype, tiny_clip.embed_dim
        preprocess = "another transform"

    assert cache_key(Other()) != cache_key(tiny_clip)


def test_a_bad_image_fails_alone(shapes_folder, tiny_clip):
    folder, _ = shapes_folder
    (folder / "broken.png").write_bytes(b"not an image at all")
    (folder / "broken.txt").write_text("a caption", encoding="utf-8")
    table = scan_folder(folder)
    ReviewScorer(tiny_clip).score(table)
    broken = table.row(str(folder / "broken.png"))
    assert broken.error and broken.clip_score is None
    assert sum(r.clip_score is not None for r in table.rows) == 6


# ----------------------------------------------------------------------------------------------------- edits
def test_save_undo_and_journal(shapes_folder):
    from lib_clipcap.batch.journal import Journal

    folder, _ = shapes_folder
    table = scan_folder(folder)
    row = table.row(str(folder / "im0.png"))
    old = Path(row.caption_file).read_bytes()
    out = save_captions(table, [(row.image, "a better caption")])
    assert [o.status for o in out] == ["saved"]
    assert Path(row.caption_file).read_text(encoding="utf-8") == "a better caption"
    assert row.caption == "a better caption"
    # The journal records the edit, so a resumed tag run treats the file as finished.
    header = json.loads((folder / ".clipcap-journal.jsonl").read_text().splitlines()[0])
    journal = Journal(folder, header["signature"]).load()
    st = os.stat(row.image)
    assert journal.is_done(Path(row.caption_file), st.st_size, st.st_mtime_ns)
    # Saving the same text again changes nothing.
    assert save_captions(table, [(row.image, "a better caption")])[0].status == "unchanged"
    # A new caption for the uncaptioned image, then undo both saves in turn.
    missing = table.row(str(folder / "sub" / "im6.png"))
    save_captions(table, [(missing.image, "new one")])
    assert "missing" not in missing.flags
    assert undo_depth(table) == 2
    assert [o.status for o in undo_last(table)] == ["removed"]
    assert not Path(missing.caption_file).exists() and missing.flags == ["missing"]
    assert [o.status for o in undo_last(table)] == ["restored"]
    assert Path(row.caption_file).read_bytes() == old
    assert undo_last(table) == []
    # Refused: control characters (nothing written), images outside the table.
    with pytest.raises(CaptionTextError):
        save_captions(table, [(row.image, "ok"), (missing.image, "two\nlines")])
    assert Path(row.caption_file).read_bytes() == old
    with pytest.raises(ValueError, match="not an image of the reviewed folder"):
        save_captions(table, [(str(folder / "nope.png"), "x")])


def test_undo_leaves_a_file_changed_since_alone(shapes_folder):
    folder, _ = shapes_folder
    table = scan_folder(folder)
    row = table.row(str(folder / "im1.png"))
    save_captions(table, [(row.image, "edited")])
    Path(row.caption_file).write_text("changed by hand", encoding="utf-8")
    assert [o.status for o in undo_last(table)] == ["conflict"]
    assert Path(row.caption_file).read_text(encoding="utf-8") == "changed by hand"


def test_non_utf8_caption_is_restored_byte_for_byte(shapes_folder):
    folder, _ = shapes_folder
    raw = b"caf\xe9, a red circle"
    (folder / "im2.txt").write_bytes(raw)
    table = scan_folder(folder)
    row = table.row(str(folder / "im2.png"))
    assert "non_utf8" in row.flags
    save_captions(table, [(row.image, row.caption.replace("\ufffd", "é"))])
    assert Path(row.caption_file).read_text(encoding="utf-8") == "café, a red circle" and row.flags == []
    undo_last(table)
    assert Path(row.caption_file).read_bytes() == raw


def test_save_refused_while_a_batch_run_holds_the_lock(shapes_folder):
    from lib_clipcap.batch import BatchLockedError
    from lib_clipcap.batch.lock import FolderLock

    folder, _ = shapes_folder
    table = scan_folder(folder)
    row = table.rows[0]
    before = Path(row.caption_file).read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from lib_clipcap.batch.lock import FolderLock
        FolderLock(__import__('pathlib').Path({str(folder)!r})).acquire()
        print('locked', flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BatchLockedError):
            save_captions(table, [(row.image, "while locked")])
    finally:
        holder.kill()
        holder.wait()
    assert Path(row.caption_file).read_bytes() == before
    with FolderLock(folder):
        pass


def test_bulk_preview_then_apply_then_undo(shapes_folder):
    folder, _ = shapes_folder
    table = scan_folder(folder)
    texts_before = {r.image: r.caption for r in table.rows}
    plan = plan_bulk(table.rows, find="background", replace="backdrop")
    expected = sum(1 for t in texts_before.values() if t and "background" in t)
    assert len(plan) == expected > 0
    assert all("backdrop" in new for _, new in plan)
    assert all(r.caption == texts_before[r.image] for r in table.rows)  # a preview writes nothing
    out = save_captions(table, [(r.image, t) for r, t in plan])
    assert sum(o.status == "saved" for o in out) == expected
    # The prefix is added once; captions that have it already are not counted.
    prefix_plan = plan_bulk(table.rows, prefix="sks")
    assert len(prefix_plan) == 6
    save_captions(table, [(r.image, t) for r, t in prefix_plan])
    assert plan_bulk(table.rows, prefix="sks") == []
    assert all(r.caption.startswith("sks, ") for r in table.rows if r.caption)
    # Regex with a group; the whole bulk edit is one undo step.
    # Find/replace sees the body only (the detected trigger "sks" is kept first): "^" is the body's start.
    assert table.triggers == ["sks"]
    assert plan_bulk(table.rows, find=r"^sks, ", replace="", regex=True, table=table) == []
    regex_plan = plan_bulk(table.rows, find=r"^(a|an) ", replace=r"the ", regex=True, table=table)
    assert len(regex_plan) == 6 and all(t.startswith("sks, the ") for _, t in regex_plan)
    undo_last(table)  # the prefix
    undo_last(table)  # the replace
    assert {r.image: Path(r.caption_file).read_text(encoding="utf-8") if r.caption is not None else None
            for r in table.rows} == texts_before


_SAVER = """
import sys
sys.path.insert(0, {root!r})
import lib_clipcap.batch.runner as runner
from lib_clipcap.review import scan_folder, save_captions

real_write_files = runner.write_files


def announced(items):  # only tells the parent that the writes begin, so its kill lands in or around them
    print("writing", flush=True)
    return real_write_files(items)


runner.write_files = announced
table = scan_folder({folder!r})
row = table.row({image!r})
texts = [{a_word!r} * {a_n}, {b_word!r} * {b_n}]
i = 0
while True:
    save_captions(table, [(row.image, texts[i % 2])])
    i += 1
"""


@pytest.mark.slow
def test_kill_during_save_leaves_old_or_new_text(shapes_folder):
    """SIGKILL a process while it saves a big caption: the file holds the old or the new text, never a part.

    The saver announces each write; the kill comes 0-20 ms later, in or around the write of the ~1 MB caption. A plain
    open/write saver put in its place was caught half-written by about one kill in five when this test was written,
    so twelve kills miss a non-atomic writer rarely.
    """
    import random

    folder, _ = shapes_folder
    image = str(folder / "im3.png")
    cap = folder / "im3.txt"
    original = cap.read_text(encoding="utf-8")
    texts = {"a_word": "alpha ", "a_n": 150_000, "b_word": "bravo, ", "b_n": 130_000}
    a, b = "alpha " * 150_000, "bravo, " * 130_000
    rng = random.Random(0)
    seen = set()
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER.format(root=str(ROOT), folder=str(folder),
                                                                     image=image, **texts)],
                                stdout=subprocess.PIPE, text=True)
        for _ in range(rng.randrange(1, 4)):  # let it finish a save or two first, sometimes
            assert proc.stdout.readline().strip() == "writing"
        time.sleep(rng.uniform(0.0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        text = cap.read_text(encoding="utf-8")
        assert text in (original, a, b), f"partial caption of {len(text)} characters"
        seen.add(text)
    assert seen & {a, b}, "the saver never got to save: the test proved nothing"
    # The next save cleans up what the killed one left, and works.
    table = scan_folder(folder)
    assert save_captions(table, [(image, "final")])[0].status == "saved"
    assert cap.read_text(encoding="utf-8") == "final"
    assert not list(folder.glob(".im3.txt.*.tmp"))


def test_a_resumed_tag_run_keeps_a_reviewed_edit(shapes_folder, demo_captioner):
    """An edit is journaled under the tag run's own signature, so resuming that run (even with existing=overwrite)
    treats the edited file as finished instead of captioning over the user's fix."""
    from lib_clipcap.batch import TagOptions, run_tagging

    folder, _ = shapes_folder
    options = TagOptions(inputs=[str(folder)], existing="overwrite", workers=0)
    first = run_tagging(options, demo_captioner)
    assert first.written == 7
    table = scan_folder(folder)
    edited = table.row(str(folder / "im1.png"))
    save_captions(table, [(edited.image, "fixed by hand")])
    second = run_tagging(options, demo_captioner)
    assert second.written == 0 and second.skipped == 7
    assert Path(edited.caption_file).read_text(encoding="utf-8") == "fixed by hand"


def test_one_text_rule_refuses_unicode_line_separators_and_flags_them(tmp_path):
    from lib_clipcap.batch.options import TagOptions
    from lib_clipcap.options_table import OptionError

    for bad in ("a\u2028b", "a\u2029b", "a\x85b"):
        with pytest.raises(CaptionTextError, match="U\\+0?[0-9A-F]{3,4}"):
            F.check_caption_text(bad)
        with pytest.raises(OptionError, match="line break or tab"):
            TagOptions(inputs=["x"], suffix=bad)
        assert "control_chars" in F.flags_for(bad)
    assert "control_chars" not in F.flags_for("one line\n")  # an editor's final newline is fine


def test_scan_does_not_read_captions_through_symlinks_leading_out(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "ds").mkdir(parents=True)
    _render(root / "ds" / "a.png", 1, 0)
    _render(root / "ds" / "b.png", 1, 1)
    outside.mkdir()
    (outside / "secret.txt").write_text("secret", encoding="utf-8")
    os.symlink(outside / "secret.txt", root / "ds" / "a.txt")
    (root / "ds" / "b.txt").write_text("a caption", encoding="utf-8")
    local = scan_folder(root / "ds")  # a local tool, no allowed folders: reads it
    assert local.row(str(root / "ds" / "a.png")).caption == "secret"
    served = scan_folder(root / "ds", allowed_roots=[Path(os.path.realpath(root))])
    a, b = served.row(str(root / "ds" / "a.png")), served.row(str(root / "ds" / "b.png"))
    assert a.caption is None and "outside the allowed folders" in a.caption_error and "secret" not in a.caption_error
    assert b.caption == "a caption" and b.caption_error is None


def test_a_backtracking_bulk_find_fails_within_the_time_limit(tmp_path):
    pytest.importorskip("regex")
    from lib_clipcap.options_table import OptionError
    from lib_clipcap.review.table import ReviewRow

    row = ReviewRow(image="x.png", rel="x.png", caption_file="x.txt", journal_root=".", caption="a" * 40 + "!")
    t0 = time.monotonic()
    with pytest.raises(OptionError, match="took longer than"):
        plan_bulk([row], find="(a|aa)+$", replace="x", regex=True)
    # Unbounded, (a|aa)+$ on 40 a's backtracks for hours; the 1 s limit stops it. The bound is loose on purpose: a
    # loaded CI machine (load average 10 measured) stretches the wall clock, not the limit.
    assert time.monotonic() - t0 < 20.0
    assert plan_bulk([row], find="A", replace="b") == []  # literal find is case-sensitive, as before
    assert plan_bulk([row], find="(a)(!)", replace=r"\2\1", regex=True)[0][1] == "a" * 39 + "!a"
