"""Tags in review (issue 22): kohya-style tag captions read as tags, each scored against its image with CLIP, filtered
by, sorted by disagreement, added and removed across a selection (atomic, undoable), in the library, the CLI, the HTTP
routes and the gradio section."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lib_clipcap.review import ReviewScorer, ReviewTagScorer, filter_rows, scan_folder, sort_rows, undo_depth
from lib_clipcap.review.service import ReviewService
from lib_clipcap.review.tags import check_tags, plan_tag_edit, split_tags, tag_counts, tag_key

DEMO = "shapes-demo"
SEED = 21


def _single_shape_scenes(count: int) -> list:
    """The first ``count`` one-shape scenes of the world :data:`SEED` (their colour, shape, size, background known)."""
    from lib_clipcap.shapes import make_scene

    out, i = [], 0
    while len(out) < count:
        scene = make_scene(SEED, i)
        i += 1
        if len(scene.shapes) == 1:
            out.append(scene)
    return out


def _wrong_colour(colour: str) -> str:
    from lib_clipcap.shapes import COLORS

    return next(c for c in COLORS if c != colour)


def _tags_of(scene, *, colour: str | None = None) -> str:
    s = scene.shapes[0]
    return f"sks, {s.size}, {colour or s.color}, {s.shape}, {scene.background} background"


@pytest.fixture()
def tag_folder(tmp_path):
    """Five one-shape images with true tag captions (``sks, size, colour, shape, background``), except image 2,
    whose colour tag is wrong; returns ``(folder, scenes)``."""
    folder = tmp_path / "allowed" / "set"
    folder.mkdir(parents=True)
    scenes = _single_shape_scenes(5)
    for i, scene in enumerate(scenes):
        scene.render().save(folder / f"{i}.png")
        wrong = _wrong_colour(scene.shapes[0].color) if i == 2 else None
        (folder / f"{i}.txt").write_text(_tags_of(scene, colour=wrong), encoding="utf-8")
    return folder, scenes


def _scored(folder: Path, clip, vocabulary: str = "shapes"):
    table = scan_folder(folder)
    ReviewScorer(clip, tags=ReviewTagScorer(clip, vocabulary)).score(table)
    return table


def _by_name(table) -> dict:
    return {Path(r.image).name: r for r in table.rows}


# ------------------------------------------------------------------------------------------------ parsing
def test_split_tags_reads_tags_and_a_leading_sentence():
    assert split_tags("red, triangle, white background") == (None, ["red", "triangle", "white background"])
    # tag --content caption+tags: the sentence (its closing period dropped by join_phrases), then the tags
    assert split_tags("a small red triangle on a white background, red, triangle") == (
        "a small red triangle on a white background", ["red", "triangle"])
    assert split_tags("a small blue triangle on a white background.") == (
        "a small blue triangle on a white background.", [])
    assert split_tags("a dog, outdoors,, smile") == (None, ["a dog", "outdoors", "smile"])
    assert split_tags("") == (None, []) and split_tags(None) == (None, [])
    assert tag_key("White_Background.") == tag_key(" white  background") == "white background"


def test_trigger_stays_apart_and_is_not_a_tag(tag_folder):
    folder, _ = tag_folder
    table = scan_folder(folder)
    assert table.triggers == ["sks"]  # detected
    row = _by_name(table)["0.png"]
    assert row.triggers == ["sks"] and "sks" not in row.tags and len(row.tags) == 4
    counts = tag_counts(table.rows)
    assert counts[row.tags[0]] >= 1 and "sks" not in counts


def test_check_tags_names_the_field_and_value():
    from lib_clipcap.options_table import OptionError

    assert check_tags("add", "red, blue ,red") == ["red", "blue"]
    assert check_tags("add", ["white  background"]) == ["white background"]
    with pytest.raises(OptionError, match=r"add='a,b' is invalid: contains ','"):
        check_tags("add", ["a,b"])
    with pytest.raises(OptionError, match="remove="):
        check_tags("remove", ["  "])
    with pytest.raises(OptionError, match="control character"):
        check_tags("add", ["a\nb"])
    with pytest.raises(OptionError, match="add=5"):
        check_tags("add", 5)


def test_plan_tag_edit_rules():
    trig = ["sks"]
    assert plan_tag_edit("sks, red, circle", trig, add=["large"]) == "sks, red, circle, large"
    assert plan_tag_edit("sks, red, circle", trig, add=["Red", "sks"]) is None  # never twice, never the trigger
    assert plan_tag_edit("sks, red, circle, large", trig, remove=["circle"]) == "sks, red, large"
    assert plan_tag_edit("sks, red", trig, remove=["sks"]) is None  # the trigger is not a tag: it stays
    assert plan_tag_edit("red, circle", trig, add=["large"]) == "sks, red, circle, large"  # given trigger first
    assert plan_tag_edit("a small red circle on a white background.", [], add=["red"]) == (
        "a small red circle on a white background, red")  # caption+tags: the sentence stays first
    assert plan_tag_edit(None, trig, add=["red"]) == "sks, red"  # no caption file: one with the tag
    assert plan_tag_edit("sks, red", trig, remove=["red"]) == "sks"


# ------------------------------------------------------------------------------------------------ scores
def test_tag_scores_are_clip_scores_and_the_true_colour_wins(tag_folder, tiny_clip):
    """Each tag's score is the CLIP-S of its best prompt (the tagger's prompts for a vocabulary tag, the bare tag
    otherwise), and the image's true colour scores above a wrong colour."""
    import torch

    from lib_clipcap.scoring import clip_score_from_cosine
    from lib_clipcap.tags import Tagger

    folder, scenes = tag_folder
    scene = scenes[0]
    true_c, wrong_c = scene.shapes[0].color, _wrong_colour(scene.shapes[0].color)
    (folder / "0.txt").write_text(f"sks, {wrong_c}, {true_c}, {scene.shapes[0].shape}, shiny", encoding="utf-8")
    table = _scored(folder, tiny_clip)
    row = _by_name(table)["0.png"]
    scores = {d["tag"]: d for d in row.tag_scores}
    assert set(scores) == {wrong_c, true_c, scene.shapes[0].shape, "shiny"}  # the trigger is not scored
    assert scores[true_c]["score"] > scores[wrong_c]["score"] + 0.2
    assert scores[wrong_c]["flagged"] and scores[wrong_c]["better"] == true_c and not scores[true_c]["flagged"]
    assert [d["score"] for d in row.tag_scores] == sorted(d["score"] for d in row.tag_scores)  # lowest first
    assert row.tag_min == row.tag_scores[0]["score"]

    # The same numbers computed independently: the image feature, the tagger's cosines, CLIP-S.
    img = tiny_clip.encode_images(tiny_clip.preprocess_images([scene.render()]), normalize=True).float()
    tagger = Tagger(tiny_clip, "shapes", cache=None)
    cos = tagger.scores(img, scoring="cosine")[0]
    probs = tagger.scores(img)[0]
    for colour in (true_c, wrong_c):
        k = tagger.vocabulary.tags.index(colour)
        assert scores[colour]["score"] == pytest.approx(float(clip_score_from_cosine(cos[k])), abs=1e-4)
        assert scores[colour]["probability"] == pytest.approx(float(probs[k]), abs=1e-4)
    txt = tiny_clip.encode_texts(["shiny"], normalize=True).float()
    expected = float(clip_score_from_cosine((img * txt).sum(-1))[0])
    assert scores["shiny"]["score"] == pytest.approx(expected, abs=1e-4) and scores["shiny"]["probability"] is None
    assert isinstance(scores["shiny"]["score"], float) and not torch.is_tensor(scores["shiny"]["score"])


def test_disagreement_sort_puts_the_wrong_tag_first(tag_folder, tiny_clip):
    folder, scenes = tag_folder
    table = _scored(folder, tiny_clip)
    rows = sort_rows(table.rows, "tags")
    assert Path(rows[0].image).name == "2.png"
    worst = rows[0].tag_scores[0]
    assert worst["tag"] == _wrong_colour(scenes[2].shapes[0].color) and worst["flagged"]
    assert worst["better"] == scenes[2].shapes[0].color
    assert not any(d["flagged"] for r in rows[1:] for d in r.tag_scores)
    assert [r.tag_min for r in rows] == sorted(r.tag_min for r in rows)


def test_tag_texts_are_encoded_once_per_session(tag_folder, tiny_clip):
    folder, _ = tag_folder
    (folder / "1.txt").write_text("sks, shiny, glossy", encoding="utf-8")
    (folder / "3.txt").write_text("sks, shiny", encoding="utf-8")
    memo: dict = {}
    table = scan_folder(folder)
    tags = ReviewTagScorer(tiny_clip, "shapes", memo=memo)
    ReviewScorer(tiny_clip, tags=tags).score(table)
    assert tags.stats["tag_texts_encoded"] == 2  # "shiny" once for two images, "glossy"
    again = ReviewTagScorer(tiny_clip, "shapes", memo=memo)
    ReviewScorer(tiny_clip, tags=again).score(table)
    assert again.stats["tag_texts_encoded"] == 0


def test_filter_by_tag(tag_folder, tiny_clip):
    folder, scenes = tag_folder
    table = scan_folder(folder)
    colour = scenes[0].shapes[0].color
    holding = {Path(r.image).name for r in table.rows if colour in r.tags}
    got = filter_rows(table.rows, tags=[colour.upper()])
    assert {Path(r.image).name for r in got} == holding and "0.png" in holding
    bg = f"{scenes[0].background}_background"  # underscores match spaces
    assert {Path(r.image).name for r in filter_rows(table.rows, tags=[bg])} == {
        f"{i}.png" for i, s in enumerate(scenes) if s.background == scenes[0].background}
    assert filter_rows(table.rows, tags=["sks"]) == []  # a trigger word is not a tag
    assert filter_rows(table.rows, tags=[colour, "no such tag"]) == []


# ------------------------------------------------------------------------------------------------- edits
def test_bulk_add_remove_byte_for_byte_and_undo(tag_folder):
    folder, scenes = tag_folder
    (folder / "3.txt").write_text("a large blue circle on a black background, blue", encoding="utf-8")  # no trigger
    (folder / "4.txt").unlink()  # no caption file at all
    before = {p.name: p.read_bytes() for p in folder.glob("*.txt")}
    svc = ReviewService(manager=None)  # edits need no model
    table = svc.table(svc.params(str(folder), triggers=["sks"]))
    colour0 = scenes[0].shapes[0].color
    images = ["0.png", "1.png", "3.png", "4.png"]
    plan, out = svc.edit_tags(table, images, add=["outdoors", colour0], dry_run=True)
    assert out == [] and len(plan) == 4 and {p.name: p.read_bytes() for p in folder.glob("*.txt")} == before

    plan, out = svc.edit_tags(table, images, add=["outdoors", colour0])
    assert [o.status for o in out] == ["saved"] * 4
    assert (folder / "0.txt").read_bytes() == (_tags_of(scenes[0]) + ", outdoors").encode()  # colour0: held already
    assert (folder / "1.txt").read_bytes() == (_tags_of(scenes[1]) + f", outdoors, {colour0}").encode()
    assert (folder / "3.txt").read_bytes() == (
        f"sks, a large blue circle on a black background, blue, outdoors, {colour0}").encode()
    assert (folder / "4.txt").read_bytes() == f"sks, outdoors, {colour0}".encode()
    assert (folder / "2.txt").read_bytes() == before["2.txt"]  # not selected
    assert undo_depth(table) == 1

    s0 = scenes[0].shapes[0]
    _, out = svc.edit_tags(table, ["0.png"], remove=[s0.shape, "Outdoors"])
    assert (folder / "0.txt").read_bytes() == f"sks, {s0.size}, {s0.color}, {scenes[0].background} background".encode()
    assert _by_name(table)["0.png"].tags == [s0.size, s0.color, f"{scenes[0].background} background"]
    assert undo_depth(table) == 2
    assert svc.edit_tags(table, ["0.png"], remove=["no such tag"]) == ([], [])

    svc.undo(table)
    assert (folder / "0.txt").read_bytes() == (_tags_of(scenes[0]) + ", outdoors").encode()
    svc.undo(table)
    assert {p.name: p.read_bytes() for p in folder.glob("*.txt")} == before and not (folder / "4.txt").exists()
    assert undo_depth(table) == 0


def test_tag_edit_errors_name_the_problem(tag_folder):
    from lib_clipcap.options_table import OptionError
    from lib_clipcap.review import UnknownImageError

    folder, _ = tag_folder
    svc = ReviewService(manager=None)
    table = svc.table(svc.params(str(folder)))
    with pytest.raises(UnknownImageError, match="nope.png"):
        svc.edit_tags(table, ["nope.png"], add=["red"])
    with pytest.raises(OptionError, match="add=.*give a tag"):
        svc.edit_tags(table, ["0.png"])
    with pytest.raises(OptionError, match="remove='a,b'"):
        svc.edit_tags(table, ["0.png"], remove=["a,b"])


def test_service_scores_tags_and_rescores_after_an_edit(tag_folder, demo_captioner, tmp_path):
    from lib_clipcap.app.service import ModelManager

    folder, scenes = tag_folder
    manager = ModelManager(models_dir=tmp_path / "models", loader=lambda name: demo_captioner)
    svc = ReviewService(manager)
    table = svc.table(svc.params(str(folder)))
    svc.score(table, DEMO, tags="shapes")
    assert table.scoring["tags"] == "shapes"
    row = _by_name(table)["2.png"]
    wrong = _wrong_colour(scenes[2].shapes[0].color)
    assert row.tag_scores[0]["tag"] == wrong and row.tag_scores[0]["flagged"]
    svc.edit_tags(table, ["2.png"], add=[scenes[2].shapes[0].color], remove=[wrong])
    assert row.tag_scores is not None and not any(d["flagged"] for d in row.tag_scores)  # rescored
    svc.score(table, DEMO, tags=None)
    assert all(r.tag_scores is None for r in table.rows)
    from lib_clipcap.options_table import OptionError

    with pytest.raises(OptionError, match="tag_vocabulary"):
        svc.score(table, DEMO, tags=str(tmp_path / "nope.txt"))


# --------------------------------------------------------------------------------------------------- CLI
def _cli(*argv: str) -> int:
    from lib_clipcap.review.cli import add_arguments, run

    p = argparse.ArgumentParser()
    add_arguments(p)
    return run(p.parse_args(list(argv)))


def test_cli_tags_sort_filter_edit_and_undo(tag_folder, tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.setenv("CLIPCAP_MODELS_DIR", str(tmp_path / "models"))
    folder, scenes = tag_folder
    out = tmp_path / "rows.json"
    assert _cli(str(folder), "--model", DEMO, "--tag-vocabulary", "shapes", "--sort", "tags", "--json",
                str(out)) == 0
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert rows[0]["image"].endswith("2.png") and rows[0]["tag_scores"][0]["flagged"]
    assert rows[0]["tags"][1] == _wrong_colour(scenes[2].shapes[0].color)
    capsys.readouterr()
    assert _cli(str(folder), "--model", DEMO, "--tag-vocabulary", "shapes", "--sort", "tags", "--worst", "1") == 0
    text = capsys.readouterr().out
    assert "tags: " in text and "!" in text and "2.png" in text
    # filter, then add a tag to the rows listed: one undoable save
    colour = scenes[0].shapes[0].color
    before = {p.name: p.read_bytes() for p in folder.glob("*.txt")}
    assert _cli(str(folder), "--no-scores", "--has-tag", colour, "--add-tag", "outdoors", "--dry-run") == 0
    assert {p.name: p.read_bytes() for p in folder.glob("*.txt")} == before
    assert _cli(str(folder), "--no-scores", "--has-tag", colour, "--add-tag", "outdoors") == 0
    changed = {p.name for p in folder.glob("*.txt") if p.read_bytes() != before[p.name]}
    assert "0.txt" in changed and all(colour in before[n].decode() for n in changed)
    assert (folder / "0.txt").read_bytes() == before["0.txt"] + b", outdoors"
    assert _cli(str(folder), "--no-scores", "--undo") == 0
    assert {p.name: p.read_bytes() for p in folder.glob("*.txt")} == before
    from lib_clipcap.options_table import OptionError

    with pytest.raises(OptionError, match="--add-tag='a,b'"):
        _cli(str(folder), "--no-scores", "--add-tag", "a,b")


# ------------------------------------------------------------------------------------------------- routes
@pytest.fixture()
def client(demo_captioner, tag_folder, tmp_path):
    pytest.importorskip("httpx")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_clipcap.app.api import mount_api
    from lib_clipcap.app.service import ModelManager
    from lib_clipcap.batch.jobs import JobManager

    root = tag_folder[0].parent
    manager = ModelManager(models_dir=tmp_path / "models", loader=lambda name: demo_captioner)
    app = FastAPI()
    mount_api(app, manager, default_model=DEMO, job_manager=JobManager(manager, [root]))
    return TestClient(app)


def _error(r, status: int, type_: str, field: str | None = None) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["type"] == type_, body
    if field is not None:
        assert body.get("field") == field, body
    return body["message"]


def test_routes_tags_filter_sort_and_edit(client, tag_folder):
    from lib_clipcap.app.api import API_PREFIX

    folder, scenes = tag_folder
    r = client.post(f"{API_PREFIX}/review", json={"folder": "set", "tag_vocabulary": "shapes", "sort": "tags"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rows"][0]["image"].endswith("2.png") and body["rows"][0]["tag_scores"][0]["flagged"]
    assert body["tag_vocabulary"] == "shapes" and body["tag_counts"]
    colour = scenes[0].shapes[0].color
    only = client.post(f"{API_PREFIX}/review", json={"folder": "set", "tag_vocabulary": "shapes", "tag": colour,
                                                     "rescan": False}).json()
    assert only["scoring"] is None and only["total"] == body["tag_counts"][colour]
    assert all(colour in row["tags"] for row in only["rows"])

    before = (folder / "0.txt").read_bytes()
    dry = client.post(f"{API_PREFIX}/review/tags", json={"folder": "set", "images": ["0.png"], "add": ["outdoors"],
                                                         "dry_run": True}).json()
    assert dry["changed"] == 1 and dry["files"][0]["status"] == "planned" and (folder / "0.txt").read_bytes() == before
    r = client.post(f"{API_PREFIX}/review/tags", json={"folder": "set", "images": ["0.png", "1.png"],
                                                       "add": "outdoors", "remove": [scenes[0].shapes[0].shape]})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["changed"] == 2 and res["undo_depth"] == 1
    s0 = scenes[0].shapes[0]
    assert (folder / "0.txt").read_bytes() == (
        f"sks, {s0.size}, {s0.color}, {scenes[0].background} background, outdoors").encode()
    assert res["rows"][0]["tags"][-1] == "outdoors" and res["rows"][0]["tag_scores"] is not None  # rescored
    undo = client.post(f"{API_PREFIX}/review/undo", json={"folder": "set"}).json()
    assert {u["status"] for u in undo["undone"]} == {"restored"} and (folder / "0.txt").read_bytes() == before


def test_routes_validate_tag_fields(client, tag_folder, tmp_path):
    from lib_clipcap.app.api import API_PREFIX

    url = f"{API_PREFIX}/review/tags"
    assert "," in _error(client.post(url, json={"folder": "set", "images": ["0.png"], "add": ["a,b"]}), 422,
                         "invalid_option", "add")
    _error(client.post(url, json={"folder": "set", "images": ["0.png"], "remove": [""]}), 422, "invalid_option",
           "remove")
    _error(client.post(url, json={"folder": "set", "images": ["0.png"]}), 422, "invalid_option", "add")
    _error(client.post(url, json={"folder": "set", "add": ["x"]}), 422, "invalid_option", "images")
    _error(client.post(url, json={"folder": "set", "images": "0.png,1.png", "add": 3}), 422, "invalid_option",
           "add")
    _error(client.post(url, json={"folder": "set", "images": [1], "add": ["x"]}), 422, "invalid_option", "images")
    _error(client.post(url, json={"folder": "set", "images": ["0.png"], "add": ["x"], "dry_run": "yes"}), 422,
           "invalid_option", "dry_run")
    _error(client.post(url, json={"folder": "set", "images": ["0.png"], "add": ["x"], "bogus": 1}), 422,
           "invalid_option", "bogus")
    _error(client.post(url, json={"folder": "set", "images": ["nope.png"], "add": ["x"]}), 404, "unknown_image")
    _error(client.post(url, json={"folder": "../elsewhere", "images": ["0.png"], "add": ["x"]}), 403,
           "forbidden_path")
    review = f"{API_PREFIX}/review"
    _error(client.post(review, json={"folder": "set", "tag": ["a,b"]}), 422, "invalid_option", "tag")
    _error(client.post(review, json={"folder": "set", "sort": "tag"}), 422, "invalid_option", "sort")
    _error(client.post(review, json={"folder": "set", "tag_vocabulary": "nope.txt"}), 422, "invalid_option",
           "tag_vocabulary")
    _error(client.post(review, json={"folder": "set", "tag_vocabulary": 5}), 422, "invalid_option",
           "tag_vocabulary")
    outside = tmp_path / "vocab.txt"
    outside.write_text("colour: red\n", encoding="utf-8")
    _error(client.post(review, json={"folder": "set", "tag_vocabulary": str(outside)}), 403, "forbidden_path")
    # The routes' own guard: a foreign page's request is refused before anything is read or written.
    folder = tag_folder[0]
    before = (folder / "0.txt").read_bytes()
    r = client.post(url, json={"folder": "set", "images": ["0.png"], "add": ["planted"]},
                    headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden_origin"
    assert (folder / "0.txt").read_bytes() == before


# ----------------------------------------------------------------------------------------------------- UI
def test_ui_shows_filters_sorts_and_edits_tags(demo_captioner, tag_folder, tmp_path):
    pytest.importorskip("gradio")
    from lib_clipcap.app.service import ModelManager
    from lib_clipcap.batch.jobs import JobManager
    from lib_clipcap.review.ui import ReviewUI

    folder, scenes = tag_folder
    manager = ModelManager(models_dir=tmp_path / "models", loader=lambda name: demo_captioner)
    ui = ReviewUI(manager, job_manager=JobManager(manager, [folder.parent]))
    out = ui.scan("set", ".txt", DEMO, "tags", [], "", False, None, None, {}, "", "", "shapes")
    state, info = out[0], out[4]
    assert "Scanned and scored 5 images" in out[6], out[6]
    assert Path(state["order"][0]).name == "2.png"
    wrong = _wrong_colour(scenes[2].shapes[0].color)
    assert "Tags, lowest CLIP-S first" in info and f"`{wrong}`" in info and "⚠" in info
    assert info.index(f"`{wrong}`") < info.index(f"`{scenes[2].shapes[0].shape}`")  # lowest first
    colour = scenes[0].shapes[0].color
    out = ui.refilter("path", [], "", False, None, None, state, colour)
    assert out[0]["order"] and all(colour in _by_name(ui._table(out[0]))[Path(i).name].tags for i in out[0]["order"])
    state = ui.refilter("path", [], "", False, None, None, state, "")[0]
    state = ui.select_rows("none", state)[0]
    state["selected"] = [str(folder / "2.png")]
    preview = ui.tags_preview(scenes[2].shapes[0].color, wrong, state, "selected")
    assert preview.startswith("**1 caption file would change**")
    before = (folder / "2.txt").read_bytes()
    out = ui.tags_apply(scenes[2].shapes[0].color, wrong, state, "selected")
    assert out[6].startswith("Changed the tags of 1 caption file")
    s2 = scenes[2].shapes[0]
    assert (folder / "2.txt").read_bytes() == (
        f"sks, {s2.size}, {s2.shape}, {scenes[2].background} background, {s2.color}").encode()
    assert "No caption file would change." == ui.tags_preview(s2.color, "", out[0], "selected")
    assert "remove tags='a,b'" in ui.tags_preview("", ["a,b"], out[0], "selected")
    ui.undo(out[0])
    assert (folder / "2.txt").read_bytes() == before
