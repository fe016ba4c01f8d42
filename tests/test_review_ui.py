"""The Review section of the gradio UI: built into build_ui, handlers scan, filter, navigate, save, undo, recaption
and bulk-edit (plain values, no browser; the browser test is tests/test_review_browser.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from _review_data import tagged_folder  # noqa: E402
from lib_clipcap.app.service import ModelManager  # noqa: E402
from lib_clipcap.app.ui import build_ui  # noqa: E402

DEMO = "shapes-demo"


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "allowed"
    return root, tagged_folder(root / "set", seed=5, images=4, wrong=2)


@pytest.fixture()
def review(demo_captioner, folder, tmp_path):
    from lib_clipcap.batch.jobs import JobManager

    manager = ModelManager(models_dir=tmp_path / "models", loader=lambda name: demo_captioner)
    demo = build_ui(manager, job_manager=JobManager(manager, [folder[0]]), values={"model": DEMO})
    return demo.clipcap_review


def _keys():
    from lib_clipcap.options_table import decoding_options, defaults

    d = defaults()
    return [d[o.key] for o in decoding_options()]


def test_section_says_why_without_batch_folders(demo_captioner, tmp_path):
    manager = ModelManager(models_dir=tmp_path, loader=lambda name: demo_captioner)
    demo = build_ui(manager, values={"model": DEMO})
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"clipcap_review", "clipcap_review_gallery", "clipcap_review_save", "clipcap_review_undo",
            "clipcap_review_recaption", "clipcap_review_bulk_preview"} <= ids
    state, gallery, _, _, _, _, status, *_ = demo.clipcap_review.scan(str(tmp_path), ".txt", DEMO, "clip", [], "",
                                                                      False, None, None, {})
    assert gallery == [] and "--batch-root" in status


def test_scan_navigate_save_undo(review, folder):
    _, ds = folder
    state, gallery, summary, preview, info, caption, status, *_ = review.scan("set", ".txt", DEMO, "clip", [], "",
                                                                              False, None, None, {})
    assert "Scanned and scored 4 images" in status, status
    assert len(gallery) == 4 and "4 images" in summary
    assert state["order"][0].endswith("2.png")  # the wrong caption first
    assert caption.startswith("a large purple triangle") and preview is not None and "1 / 4" in info
    state, _, info, caption2 = review.step(1, state)
    assert "2 / 4" in info and caption2 != caption
    state, _, info, _ = review.step(-2, state)  # wraps around
    assert "4 / 4" in info
    state, *_ = review.select(0, state)
    # Save an edit; a newline is refused.
    out = review.save("two\nlines", state)
    assert "control character" in out[6] and (ds / "2.txt").read_text(encoding="utf-8").startswith("a large purple")
    out = review.save("a better caption", state)
    assert out[6].startswith("Saved") and (ds / "2.txt").read_text(encoding="utf-8") == "a better caption"
    assert out[5] == "a better caption"
    out = review.undo(out[0])
    assert out[6] == "Undone: 1 restored." and (ds / "2.txt").read_text(encoding="utf-8").startswith("a large purple")
    assert review.undo(out[0])[6] == "Nothing to undo."


def test_filters_recaption_and_bulk(review, folder):
    _, ds = folder
    state = review.scan("set", ".txt", DEMO, "clip", [], "", False, None, None, {})[0]
    out = review.refilter("clip", [], "purple", False, None, None, state)
    assert len(out[1]) == 1 + sum("purple" in p.read_text() for p in ds.glob("[013].txt"))
    state = review.refilter("path", [], "", False, None, None, state)[0]
    assert [Path(p).name for p in state["order"]] == ["0.png", "1.png", "2.png", "3.png"]
    radio, table = review.recaption(DEMO, state, *_keys())
    assert radio["choices"] and "CLIP-S" in table and "current" in table
    preview = review.bulk_preview("", "", False, "sks", state)
    assert preview.startswith("**4 caption files would change**")
    assert all(not p.read_text().startswith("sks") for p in ds.glob("*.txt"))
    out = review.bulk_apply("", "", False, "sks", state)
    assert out[6].startswith("Changed 4 caption files")
    assert all(p.read_text().startswith("sks, ") for p in ds.glob("*.txt"))
    assert review.bulk_preview("", "", False, "sks", out[0]) == "No caption file would change."
    review.undo(out[0])
    assert not any(p.read_text().startswith("sks") for p in ds.glob("*.txt"))
