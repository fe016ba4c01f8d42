"""Prompts from images (issue 22, "prompts for the prompt button"): fast and best styles, the token budget, the
negative suggestion, bad values, and the faces (command line, HTTP API, Caption tab) with the bundled demo model."""

from __future__ import annotations

import base64
import contextlib
import io
import json

import pytest

from lib_clipcap import shapes
from lib_clipcap.options_table import PROMPT_STYLE_CHOICES, OptionError, get_option, prompt_settings
from lib_clipcap.tags import PromptOptionError, PromptOptions, Prompter, PromptResult, make_prompt, prompt_images
from lib_clipcap.tags.prompt import FACE_STYLES, NEGATIVE_VOCABULARY, count_tokens

DEMO = "shapes-demo"
GREEDY = {"decoding": "greedy"}


@pytest.fixture(scope="module")
def prompter(demo_captioner):
    return Prompter(demo_captioner, cache=None)


@pytest.fixture(scope="module")
def scenes():
    return [s.render() for s in shapes.heldout_scenes(6)]


def _clip_s(captioner, image, text: str) -> float:
    from lib_clipcap.scoring import clip_score

    return float(clip_score(captioner.clip, [image], [text])[0])


# --------------------------------------------------------------------------------------------------- library
def test_fast_is_the_caption_then_each_categorys_best_tag(demo_captioner, prompter, scenes):
    caption = demo_captioner.caption(scenes[0], **GREEDY)[0].text
    p = make_prompt(demo_captioner, scenes[0], "fast", prompter=prompter, decoding=GREEDY)
    assert isinstance(p, PromptResult) and p.style == "fast"
    assert p.caption == caption and p.text.startswith(caption.rstrip("."))
    cats = [m.category for m in p.modifiers]
    assert len(cats) == len(set(cats)) and cats == [c for c in prompter.vocabulary.categories if c in cats]
    assert all(m.score >= 0.3 for m in p.modifiers)
    assert p.text == ", ".join([caption.rstrip("."), *(m.tag for m in p.modifiers)])
    # the shapes-demo CLIP gets the shapes vocabulary: the scene's own colour and shape are among the modifiers
    truth = scenes_truth(0)
    assert truth <= {m.tag for m in p.modifiers} | set(caption.rstrip(".").split())
    # CLIP-S is the project's CLIP-S of the whole prompt
    assert p.clip_s == pytest.approx(_clip_s(demo_captioner, scenes[0], p.text), abs=1e-4)
    assert p.tokens == count_tokens(demo_captioner.clip, [p.text])[0]


def scenes_truth(i: int) -> set[str]:
    scene = shapes.heldout_scenes(6)[i]
    return {scene.shapes[0].color, scene.shapes[0].shape}


def test_best_never_scores_below_fast_and_beats_it_on_most_images(demo_captioner, prompter, scenes):
    pairs = [(make_prompt(demo_captioner, im, "fast", prompter=prompter, decoding=GREEDY),
              make_prompt(demo_captioner, im, "best", prompter=prompter, decoding=GREEDY)) for im in scenes]
    for (fast, best), im in zip(pairs, scenes):
        assert best.style == "best" and best.caption == fast.caption
        # by construction: the search starts from the fast prompt and only takes moves that raise CLIP-S
        assert best.clip_s >= fast.clip_s - 1e-6
        assert best.clip_s >= _clip_s(demo_captioner, im, best.caption) - 1e-4  # never below the caption alone
        assert best.clip_s == pytest.approx(_clip_s(demo_captioner, im, best.text), abs=1e-4)
        assert all(m.score >= PromptOptions().min_score for m in best.modifiers if m not in fast.modifiers)
    assert sum(b.clip_s > f.clip_s for f, b in pairs) >= len(pairs) // 2  # the search finds something to gain


def test_the_token_budget_is_respected(demo_captioner, prompter, scenes):
    caption_tokens = count_tokens(demo_captioner.clip, [demo_captioner.caption(scenes[5], **GREEDY)[0].text])[0]
    for style in ("fast", "best"):
        for budget in (caption_tokens + 2, caption_tokens + 5, 75):
            p = make_prompt(demo_captioner, scenes[5], style, prompter=prompter, decoding=GREEDY,
                            max_tokens=budget)
            assert p.tokens == count_tokens(demo_captioner.clip, [p.text])[0]
            assert p.tokens <= min(budget, 30), (style, budget, p.text)  # the demo CLIP reads 30 tokens
        tight = make_prompt(demo_captioner, scenes[5], style, prompter=prompter, decoding=GREEDY, max_tokens=1)
        assert tight.text == tight.caption and tight.modifiers == ()  # the caption is kept whole, nothing added


def test_negative_suggestion_is_the_least_matching_negatives(demo_captioner, prompter, scenes):
    from lib_clipcap.scoring import image_features
    from lib_clipcap.tags.ranking import tag_cosines

    p = make_prompt(demo_captioner, scenes[1], "fast", prompter=prompter, decoding=GREEDY, negatives=4)
    assert len(p.negative_modifiers) == 4 and p.negative == ", ".join(t.tag for t in p.negative_modifiers)
    feats = image_features(demo_captioner.clip, [scenes[1]])
    cos = tag_cosines(feats, prompter.negative.text, len(prompter.negative.vocabulary.entries))[0].tolist()
    ranked = sorted(range(len(cos)), key=lambda j: (cos[j], j))[:4]
    assert [t.tag for t in p.negative_modifiers] == [prompter.negative.vocabulary.entries[j].tag for j in ranked]
    scores = [t.score for t in p.negative_modifiers]
    assert scores == sorted(scores)  # lowest similarity first
    none = make_prompt(demo_captioner, scenes[1], "fast", prompter=prompter, decoding=GREEDY, negatives=0)
    assert none.negative == "" and none.negative_modifiers == ()
    assert "watermark" in NEGATIVE_VOCABULARY.read_text(encoding="utf-8")


def test_one_image_encoding_serves_caption_modifiers_and_negative(demo_captioner, prompter, scenes, monkeypatch):
    calls = []
    original = demo_captioner.clip.encode_images

    def counting(pixels, **kw):
        calls.append(pixels.shape[0])
        return original(pixels, **kw)

    monkeypatch.setattr(demo_captioner.clip, "encode_images", counting)
    out = prompt_images(demo_captioner, scenes[:3], "best", prompter=prompter, decoding=GREEDY)
    assert calls == [3]
    assert [r.text for r, _ in out] == [p.caption for _, p in out]


def test_a_bad_input_fails_alone(demo_captioner, prompter, scenes):
    out = prompt_images(demo_captioner, [b"not an image", scenes[0]], "fast", prompter=prompter, decoding=GREEDY)
    assert out[0][0].error and out[0][1] is None
    assert out[1][1] is not None and out[1][1].text
    from lib_clipcap.errors import ImageLoadError

    with pytest.raises(ImageLoadError, match="cannot make a prompt"):
        make_prompt(demo_captioner, b"not an image", prompter=prompter, decoding=GREEDY)


@pytest.mark.parametrize("kwargs, message", [
    ({"style": "sentence"}, r"style='sentence' is invalid: use one of fast, best \('sentence' is the caption alone"),
    ({"style": "bestest"}, r"style='bestest' is invalid: use one of fast, best"),
    ({"max_tokens": 0}, r"max_tokens=0 is invalid: must be an integer >= 1"),
    ({"max_tokens": 7.5}, r"max_tokens=7.5 is invalid"),
    ({"threshold": 1.5}, r"threshold=1.5 is invalid: must be a number between 0 and 1"),
    ({"top_k": 0}, r"top_k=0 is invalid: must be an integer >= 1"),
    ({"negatives": -1}, r"negatives=-1 is invalid: must be an integer >= 0"),
])
def test_bad_prompt_options_name_the_setting_and_value(kwargs, message):
    with pytest.raises(PromptOptionError, match=message) as e:
        PromptOptions(**kwargs)
    assert e.value.setting == next(iter(kwargs))


def test_bad_settings_are_refused_before_any_image_is_read(demo_captioner, prompter):
    with pytest.raises(PromptOptionError, match=r"max_token=3 is invalid: unknown prompt setting"):
        prompt_images(demo_captioner, [b"never read"], "fast", prompter=prompter, max_token=3)
    with pytest.raises(PromptOptionError, match=r"max_tokens=-2"):
        prompt_images(demo_captioner, [b"never read"], "best", prompter=prompter, max_tokens=-2)


def test_the_faces_styles_are_the_librarys():
    assert PROMPT_STYLE_CHOICES == FACE_STYLES
    assert get_option("prompt_style").default == "sentence"
    assert prompt_settings({}) == ("sentence", {"max_tokens": 75})
    assert prompt_settings({"prompt_style": "best", "prompt_max_tokens": 40}) == ("best", {"max_tokens": 40})
    with pytest.raises(OptionError, match=r"prompt_style='prompt' is invalid: must be one of sentence, fast, best"):
        prompt_settings({"prompt_style": "prompt"})
    with pytest.raises(OptionError, match=r"prompt_max_tokens=76 is invalid: must be at most 75"):
        prompt_settings({"prompt_max_tokens": 76})


# ----------------------------------------------------------------------------------------------------- faces
def _cli(argv: list[str]) -> tuple[int, str, str]:
    from lib_clipcap.app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def test_cli_prints_the_prompt_and_with_json_the_modifiers_and_negative(tmp_path, scenes):
    img = tmp_path / "scene.png"
    scenes[0].save(img)
    base = ["caption", str(img), "--model", DEMO, "--models-dir", str(tmp_path / "models"), "--device", "cpu",
            "--decoding", "greedy"]
    rc, out, err = _cli([*base, "--prompt-style", "fast"])
    assert rc == 0, err
    first, *details = out.splitlines()
    assert first.startswith(f"{img}\t") and "," in first
    assert any(line.strip().startswith("modifiers: ") for line in details)
    assert any(line.strip().startswith("negative: ") for line in details)
    rc, out, err = _cli([*base, "--prompt-style", "best", "--prompt-max-tokens", "20", "--json"])
    assert rc == 0, err
    (row,) = json.loads(out)
    p = row["prompt"]
    assert p["style"] == "best" and p["tokens"] <= 20 and p["caption"] == row["text"]
    assert p["negative"] and all({"tag", "category", "score"} == set(m) for m in p["modifiers"])
    rc, out, _ = _cli([*base, "--json"])  # the default: the sentence, as before
    assert rc == 0 and "prompt" not in json.loads(out)[0]


@pytest.mark.parametrize("extra, message", [
    (["--prompt-max-tokens", "0", "--prompt-style", "fast"], "--prompt-max-tokens 0: must be at least 1"),
    (["--prompt-max-tokens", "30"], "--prompt-max-tokens 30 only applies to --prompt-style fast or best"),
    (["--prompt-style", "best", "--method", "sbg"], "--prompt-style best applies to --method clipcap only"),
])
def test_cli_refuses_bad_prompt_options_before_loading_a_model(tmp_path, extra, message):
    rc, _, err = _cli(["caption", str(tmp_path / "none.png"), "--model", DEMO, *extra])
    assert rc == 2 and message in err, err


def _png(image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def client(demo_captioner, tmp_path_factory):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_clipcap.app.api import mount_api
    from lib_clipcap.app.service import ModelManager

    app = FastAPI()
    models = tmp_path_factory.mktemp("models")
    mount_api(app, ModelManager(models_dir=models, loader=lambda name: demo_captioner), default_model=DEMO)
    return TestClient(app)


def test_api_answers_the_prompt_with_modifiers_and_negative(client, scenes):
    from lib_clipcap.app.api import API_PREFIX

    body = {"image": _png(scenes[2]), "decoding": "greedy"}
    plain = client.post(f"{API_PREFIX}/caption", json=body)
    assert plain.status_code == 200 and plain.json()["prompt"] is None
    r = client.post(f"{API_PREFIX}/caption", json={**body, "prompt_style": "best", "prompt_max_tokens": 25})
    assert r.status_code == 200, r.text
    data = r.json()
    p = data["prompt"]
    assert p["style"] == "best" and p["caption"] == data["caption"] and p["tokens"] <= 25
    assert p["text"].startswith(data["caption"].rstrip(".")) and p["negative"]
    assert all(isinstance(m["score"], float) for m in p["modifiers"])
    schema = client.get("/openapi.json").json()
    req = schema["paths"][f"{API_PREFIX}/caption"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert req["properties"]["prompt_style"]["default"] == "sentence"


@pytest.mark.parametrize("field, value, message", [
    ("prompt_style", "prompt-best", "prompt_style='prompt-best' is invalid: must be one of sentence, fast, best"),
    ("prompt_max_tokens", 0, "prompt_max_tokens=0 is invalid: must be at least 1"),
    ("prompt_max_tokens", "many", "prompt_max_tokens='many' is invalid: must be an integer"),
])
def test_api_refuses_a_bad_prompt_value_with_422_naming_the_field(client, scenes, field, value, message):
    from lib_clipcap.app.api import API_PREFIX

    r = client.post(f"{API_PREFIX}/caption", json={"image": _png(scenes[0]), field: value})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field and err["message"] == message


def test_caption_tab_shows_the_prompt_its_modifiers_and_the_negative(demo_captioner, tmp_path, scenes):
    pytest.importorskip("gradio")
    from lib_clipcap.app.service import ModelManager
    from lib_clipcap.app.ui import build_ui

    demo = build_ui(ModelManager(models_dir=tmp_path, loader=lambda name: demo_captioner), values={"model": DEMO})
    ctl = demo.clipcap
    comps = demo.clipcap_components
    assert comps["prompt_style"].elem_id == "clipcap_opt_prompt_style"
    raw = {k: comps[k].value for k in ctl.option_keys} | {"decoding": "greedy"}
    text, _, status, negative, mods = ctl.prompt(scenes[3], DEMO, "fast", 75, *raw.values())
    assert "CLIP-S" in status and negative
    assert mods and all(len(row) == 3 and float(row[2]) >= 0.3 for row in mods)
    assert text.endswith(", ".join(row[0] for row in mods))
    sentence = ctl.prompt(scenes[3], DEMO, "sentence", 75, *raw.values())
    assert sentence[0] == ctl.caption(scenes[3], DEMO, *raw.values())[0] and sentence[3:] == ("", [])
    bad = ctl.prompt(scenes[3], DEMO, "fast", 0, *raw.values())
    assert bad[0] == "" and "prompt_max_tokens" in bad[2]
