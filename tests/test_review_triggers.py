"""Trigger words in review (issue 20): split from the body, left out of scoring, kept by every edit; review at dataset
scale (10,000 rows: paging, selection, bulk edit of the selection only) and a refused save that keeps the typed text.
The browser test of the same is tests/test_review_browser.py::test_trigger_set_paging_selection_and_refused_save."""

from __future__ import annotations

from pathlib import Path

import pytest
from _review_data import tagged_folder

from lib_clipcap.review import ReviewScorer, plan_bulk, save_captions, scan_folder
from lib_clipcap.review.triggers import attach_triggers, parse_triggers, split_triggers

DEMO = "shapes-demo"


# ---------------------------------------------------------------------------------------------- split / attach
@pytest.mark.parametrize("text, triggers, head, body", [
    ("sks, a red circle", ["sks"], ["sks"], "a red circle"),
    ("SKS ,  a red circle.", ["sks"], ["SKS"], "a red circle."),
    ("sks", ["sks"], ["sks"], ""),
    ("sks, ohwx, a, b", ["ohwx", "sks"], ["sks", "ohwx"], "a, b"),
    ("a red circle, sks", ["sks"], [], "a red circle, sks"),     # only leading segments are triggers
    ("sksx, a red circle", ["sks"], [], "sksx, a red circle"),   # a whole segment, not a word start
    ("a red circle", [], [], "a red circle"),
])
def test_split(text, triggers, head, body):
    assert split_triggers(text, triggers) == (head, body)


@pytest.mark.parametrize("text, triggers, out", [
    ("a red circle", ["sks"], "sks, a red circle"),
    ("sks, a red circle", ["sks"], "sks, a red circle"),     # already there: unchanged, never twice
    ("SKS,a red circle", ["sks"], "SKS,a red circle"),       # as written
    ("a red circle, sks", ["sks"], "sks, a red circle"),     # moved first, not duplicated
    ("", ["sks"], "sks"),
    ("a red circle", [], "a red circle"),
    ("ohwx, a dog", ["sks", "ohwx"], "sks, ohwx, a dog"),
])
def test_attach(text, triggers, out):
    assert attach_triggers(text, triggers) == out
    assert attach_triggers(out, triggers) == out  # idempotent


def test_parse_triggers():
    assert parse_triggers("") is None and parse_triggers(None) is None and parse_triggers(" , ") is None
    assert parse_triggers("sks, ohwx ,sks") == ["sks", "ohwx"]
    assert parse_triggers(["sks"]) == ["sks"]


# ---------------------------------------------------------------------------------------------------- scoring
def _pair(tmp_path, images=6):
    """The same images and captions twice: ``plain`` and ``trig`` (every caption prefixed with "sks, ")."""
    plain = tagged_folder(tmp_path / "plain", seed=31, images=images, wrong=2)
    trig = tagged_folder(tmp_path / "trig", seed=31, images=images, wrong=2)
    for p in trig.glob("*.txt"):
        p.write_text("sks, " + p.read_text(encoding="utf-8"), encoding="utf-8")
    return plain, trig


def test_scores_ignore_the_trigger_given_or_detected(tmp_path, tiny_clip):
    from lib_clipcap.grammar import bundled_grammar_for

    plain, trig = _pair(tmp_path)
    grammar = bundled_grammar_for(tiny_clip)
    seen: list = []

    class Recording(ReviewScorer):
        def text_features(self, texts):
            seen.extend(texts)
            return super().text_features(texts)

    def scores(table):
        Recording(tiny_clip, grammar, use_cache=False).score(table)
        return {r.rel: (r.clip_score, r.grammar) for r in table.rows}

    base = scores(scan_folder(plain))
    detected = scan_folder(trig)
    assert detected.triggers == ["sks"] and not detected.triggers_given
    assert all(r.triggers == ["sks"] and not r.body.startswith("sks") for r in detected.rows)
    seen.clear()
    with_detected = scores(detected)
    assert seen and not any("sks" in t for t in seen)  # CLIP (and the grammar head, on its features) never saw it
    with_given = scores(scan_folder(trig, triggers=["SKS"]))
    for got in (with_detected, with_given):
        assert got.keys() == base.keys()
        for k, (clip, gram) in base.items():
            assert got[k][0] == pytest.approx(clip, abs=1e-5) and got[k][1] == pytest.approx(gram, abs=1e-5)
    # A caption that is nothing but the trigger has nothing to score: flagged, no score, worst first.
    (trig / "0.txt").write_text("sks", encoding="utf-8")
    t = scan_folder(trig)
    Recording(tiny_clip, grammar, use_cache=False).score(t)
    r0 = t.row(str(trig / "0.png"))
    assert "trigger_only" in r0.flags and r0.clip_score is None and r0.body == ""


# ------------------------------------------------------------------------------------------------------ edits
def test_edits_keep_the_trigger(tmp_path):
    from lib_clipcap.review.service import ReviewService

    _, trig = _pair(tmp_path)
    svc = ReviewService(manager=None)
    table = svc.table(svc.params(str(trig)))
    r1 = table.row(str(trig / "1.png"))
    # A body, a whole caption and a caption with the trigger at its end all save "sks, <body>", once.
    for typed in ("a new caption", "sks, a new caption", "a new caption, sks"):
        svc.save(table, [(r1.image, typed)], rescore=False)
        assert (trig / "1.txt").read_text(encoding="utf-8") == "sks, a new caption"
        assert r1.triggers == ["sks"] and r1.body == "a new caption"
    svc.save(table, [(r1.image, "no trigger here")], rescore=False, keep_triggers=False)
    assert (trig / "1.txt").read_text(encoding="utf-8") == "no trigger here"
    # Given triggers go on every file an edit writes, even one that lacked them.
    given = svc.table(svc.params(str(trig), triggers=["sks"]))
    svc.save(given, [(str(trig / "1.png"), "back again")], rescore=False)
    assert (trig / "1.txt").read_text(encoding="utf-8") == "sks, back again"

    # Bulk find/replace sees bodies only; on a selection, only the selection changes.
    table = scan_folder(trig)
    picked = [table.row(str(trig / f"{i}.png")) for i in (3, 4)]
    before = {p.name: p.read_text(encoding="utf-8") for p in trig.glob("*.txt")}
    plan = plan_bulk(picked, find="a ", replace="one ", table=table)
    assert {r.rel for r, _ in plan} <= {"3.png", "4.png"} and plan
    assert all(t.startswith("sks, ") and t.count("sks") == 1 for _, t in plan)
    assert plan_bulk(table.rows, find="sks", replace="xyz", table=table) == []  # the trigger is not the body's
    save_captions(table, [(r.image, t) for r, t in plan])
    after = {p.name: p.read_text(encoding="utf-8") for p in trig.glob("*.txt")}
    assert {k for k in after if after[k] != before[k]} == {f"{r.rel[:-4]}.txt" for r, _ in plan}


# -------------------------------------------------------------------------------------------------------- API
@pytest.fixture()
def api(demo_captioner, tmp_path):
    pytest.importorskip("httpx")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_clipcap.app.api import API_PREFIX, mount_api
    from lib_clipcap.app.service import ModelManager
    from lib_clipcap.batch.jobs import JobManager

    root = tmp_path / "allowed"
    _pair(root)
    manager = ModelManager(models_dir=tmp_path / "models", loader=lambda name: demo_captioner)
    app = FastAPI()
    mount_api(app, manager, default_model=DEMO, job_manager=JobManager(manager, [root]))
    return TestClient(app), API_PREFIX, root


def test_api_scores_apart_and_saves_with_the_trigger(api):
    client, prefix, root = api

    def review(folder, **kw):
        r = client.post(f"{prefix}/review", json={"folder": folder, "sort": "path", **kw})
        assert r.status_code == 200, r.text
        return r.json()

    plain, trig, given = review("plain"), review("trig"), review("trig", triggers=["sks"])
    assert trig["triggers"] == ["sks"] and given["triggers"] == ["sks"]
    for body in (trig, given):
        for a, b in zip(plain["rows"], body["rows"]):
            assert b["triggers"] == ["sks"] and b["body"] == a["caption"]
            assert b["clip_score"] == pytest.approx(a["clip_score"], abs=1e-5)
            assert (b["grammar"] is None) == (a["grammar"] is None)
            if a["grammar"] is not None:
                assert b["grammar"] == pytest.approx(a["grammar"], abs=1e-5)
    r = client.put(f"{prefix}/review/caption", json={"folder": "trig", "image": "1.png", "caption": "a fresh one"})
    assert r.status_code == 200, r.text
    assert (root / "trig" / "1.txt").read_text(encoding="utf-8") == "sks, a fresh one"
    assert r.json()["row"]["body"] == "a fresh one" and r.json()["row"]["triggers"] == ["sks"]
    r = client.put(f"{prefix}/review/caption", json={"folder": "trig", "image": "1.png", "caption": "as sent",
                                                      "keep_triggers": False})
    assert r.status_code == 200 and (root / "trig" / "1.txt").read_text(encoding="utf-8") == "as sent"
    r = client.put(f"{prefix}/review/caption", json={"folder": "trig", "image": "1.png", "caption": "x",
                                                      "keep_triggers": "yes"})
    assert r.status_code == 422


# ------------------------------------------------------------------------------------- the UI at 10,000 rows
N_ROWS = 10_000


@pytest.fixture()
def big(tmp_path):
    """10,000 rows: empty image files (never decoded: scoring is faked) with "sks, ..." captions."""
    gr = pytest.importorskip("gradio")  # noqa: F841
    from lib_clipcap.batch.jobs import JobManager
    from lib_clipcap.review.ui import ReviewUI

    root = tmp_path / "allowed"
    folder = root / "big"
    folder.mkdir(parents=True)
    for i in range(N_ROWS):
        (folder / f"{i:05d}.png").write_bytes(b"")
        (folder / f"{i:05d}.txt").write_text(f"sks, picture number {i}", encoding="utf-8")
    ui = ReviewUI(manager=None, job_manager=JobManager(None, [root]))
    seen: list = []

    def fake_score(table, model, **kw):
        """Stands in for CLIP: a score from the scored text alone (the number in it), recording the texts."""
        rows = kw.get("rows") or table.rows
        for r in rows:
            seen.append(r.scored_text)
            r.clip_score = int(r.scored_text.split()[-1]) / N_ROWS if r.scored_text else None
            r.grammar = 0.5
        return {"images_encoded": len(rows), "images_cached": 0, "texts_encoded": len(rows)}

    ui.service.score = fake_score
    return ui, folder, seen


def _o(out, name):
    from lib_clipcap.review.ui import OUTPUTS

    return out[OUTPUTS.index(name)]


def test_ten_thousand_rows_page_select_bulk_and_a_refused_save(big):
    ui, folder, seen = big
    out = ui.scan("big", ".txt", DEMO, "clip", [], "", False, None, None, {})
    assert f"Scanned and scored {N_ROWS} images" in _o(out, "status")
    assert not any("sks" in t for t in seen)  # the scorer got bodies only
    assert "trigger" in _o(out, "summary") and "`sks`" in _o(out, "summary")
    assert "rows 1–60 of 10000" in _o(out, "summary") and _o(out, "position").startswith("Rows 1–60 of 10000")
    assert len(_o(out, "gallery")) == 60 and _o(out, "caption") == "picture number 0"  # the body in the box
    state = _o(out, "state")

    # Page on, jump to the last page, back one: every row of the view is reachable.
    out = ui.page(1, state)
    state = _o(out, "state")
    assert _o(out, "position").startswith("Rows 61–120 of 10000 · page 2 / 167")
    assert _o(out, "caption") == "picture number 60" and "61 / 10000" in _o(out, "info")
    html = _o(out, "page_list")
    assert html.count("<li ") == 60 and 'title="61. 00060.png · CLIP-S 0.01' in html
    assert "trigger: sks · picture number 60" in html  # the full label, trigger apart
    out = ui.goto("10000", state)
    state = _o(out, "state")
    assert _o(out, "position").startswith("Rows 9961–10000 of 10000 · page 167 / 167")
    assert len(_o(out, "gallery")) == 40
    assert ui.page(5, state)[0]["page"] == 166 and ui.page(-1, state)[0]["page"] == 165
    state, _, _, caption = ui.select(39, state)  # a gallery click on the last page
    assert caption == "picture number 9999"

    # Multi-select: two ticked on the last page, one page selected on page 1; bulk edit of the selection only.
    state, pos = ui.pick(["09990.png", "09999.png"], state)
    assert pos.endswith("2 selected")
    state = _o(ui.page(0, state, absolute=0), "state")
    state, pos, picked = ui.select_rows("page", state)
    assert pos.endswith("62 selected") and len(picked["value"]) == 60
    state, pos = ui.pick([v for v in picked["value"] if v != "00000.png"], state)  # untick one
    assert pos.endswith("61 selected")
    preview = ui.bulk_preview("picture", "photo", False, "", state, "selected")
    assert preview.startswith("**61 caption files would change** (of 61 selected)")
    out = ui.bulk_apply("picture", "photo", False, "", state, "selected")
    assert _o(out, "status").startswith("Changed 61 caption files")
    changed = {p.name for p in folder.glob("*.txt") if "photo" in p.read_text(encoding="utf-8")}
    assert changed == {f"{i:05d}.txt" for i in range(1, 60)} | {"09990.txt", "09999.txt"}
    assert (folder / "00001.txt").read_text(encoding="utf-8") == "sks, photo number 1"  # trigger kept
    assert (folder / "00000.txt").read_text(encoding="utf-8") == "sks, picture number 0"
    assert "no image is selected" in ui.bulk_preview("x", "y", False, "", ui.select_rows("none", state)[0], "selected")

    # A refused save (a line break) says why and keeps what was typed; the file is untouched.
    state = _o(out, "state")
    state = ui.step(0, state, absolute=5)[0]
    typed = "two\nlines typed by hand"
    out = ui.save(typed, state)
    assert "refused" in _o(out, "status") and _o(out, "caption") == typed
    assert (folder / f"{Path(state['order'][5]).stem}.txt").read_text(encoding="utf-8").startswith("sks, ")
    # Saving the body keeps the trigger.
    out = ui.save("a hand-written caption", _o(out, "state"))
    assert _o(out, "status").startswith("Saved")
    assert (folder / f"{Path(state['order'][5]).stem}.txt").read_text(encoding="utf-8") == \
        "sks, a hand-written caption"
    assert _o(out, "caption") == "a hand-written caption"
