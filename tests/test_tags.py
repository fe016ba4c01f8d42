"""CLIP-ranked tags (issue 22, library part): vocabularies as files, the text-feature cache, selection rules, the
kohya-style text, and one end-to-end run with the bundled shapes-demo CLIP."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from lib_clipcap.errors import ImageLoadError, MissingFileError
from lib_clipcap.tags import (Tag, TagOptionError, TagSelection, TagTextCache, TagVocabularyError,
                              Tagger, caption_and_tag, format_tags, load_tag_vocabulary, parse_text_vocabulary,
                              select_tags, tag_images)
from lib_clipcap.tags.cache import cache_key
from lib_clipcap.tags.vocabulary import BUNDLED, GENERAL

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "lib_clipcap" / "assets"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ------------------------------------------------------------------------------------------------ vocabularies
def test_plain_text_vocabulary_categories_aliases_comments_and_templates(tmp_path):
    p = _write(tmp_path, "mine.txt", "# my tags\n\n@template a photo of {}.\n@template colour: a {} thing.\n"
                                     "colour: red | crimson | scarlet   # reds\n  triangle \nshape: a  big   circle\n")
    v = load_tag_vocabulary(p)
    assert v.name == "mine" and v.source == str(p)
    assert [(e.tag, e.category, e.aliases) for e in v.entries] == [
        ("red", "colour", ("crimson", "scarlet")), ("triangle", "", ()), ("a big circle", "shape", ())]
    assert v.categories == ("colour", "", "shape")
    assert v.prompts() == [(0, "a red thing."), (0, "a crimson thing."), (0, "a scarlet thing."),
                           (1, "a photo of triangle."), (2, "a photo of a big circle.")]


def test_template_slots_expand_to_every_tag_of_the_named_category():
    v = parse_text_vocabulary("colour: red\ncolour: blue\nshape: circle\nshape: square\n"
                              "@template shape: a {colour} {}.\n")
    assert [p for i, p in v.prompts() if i == 2] == ["a red circle.", "a blue circle."]
    with pytest.raises(TagVocabularyError, match=r"names category \{size\}"):
        parse_text_vocabulary("colour: red\n@template colour: a {size} {}.\n", source="v.txt")


@pytest.mark.parametrize("text, line, message", [
    ("red\n@tempalte a {}.\n", 2, "unknown directive '@tempalte'"),
    ("red\ncolour: blue, navy\n", 2, "contains ','"),
    ("red\n\nColour!: blue\n", 3, "category 'Colour!' is not a lower-case name"),
    ("red\n@template a photo.\n", 2, "exactly one '{}'"),
    ("red\ncolour: | navy\n", 2, "empty tag"),
    ("red\n: blue\n", 2, "no category before it"),
    ("colour: red\ncolour: crimson | red\n", 2, "'red' is already a tag or alias in category 'colour'"),
])
def test_bad_text_file_error_names_the_file_and_line(tmp_path, text, line, message):
    p = _write(tmp_path, "bad.txt", text)
    with pytest.raises(TagVocabularyError) as e:
        load_tag_vocabulary(p)
    assert f"{p}, line {line}:" in str(e.value)
    assert message in str(e.value)


def test_json_vocabulary_round_trips_and_bad_json_names_the_line_or_field(tmp_path):
    doc = {"format": "clipcap-tag-vocabulary", "version": 1, "name": "j", "template": "a photo of {}.",
           "categories": {"colour": {"template": ["a {} thing.", "something {}."],
                                     "tags": ["red", {"tag": "blue", "aliases": ["navy"]}]},
                          "": {"tags": ["triangle"]}}}
    p = _write(tmp_path, "v.json", json.dumps(doc))
    v = load_tag_vocabulary(p)
    assert v.tags == ("red", "blue", "triangle") and v.entries[1].aliases == ("navy",)
    assert v.templates_of("colour") == ("a {} thing.", "something {}.") and v.templates_of("") == ("a photo of {}.",)
    assert load_tag_vocabulary(v.to_dict()) == v
    broken = _write(tmp_path, "broken.json", '{\n "format": "clipcap-tag-vocabulary",\n "version": 1,,\n}')
    with pytest.raises(TagVocabularyError, match=rf"{broken}, line 3: not valid JSON"):
        load_tag_vocabulary(broken)
    doc["categories"]["colour"]["tags"].append(7)
    with pytest.raises(TagVocabularyError, match=r"categories\['colour'\]\.tags\[2\]: must be a tag"):
        load_tag_vocabulary(_write(tmp_path, "seven.json", json.dumps(doc)))


def test_missing_vocabulary_names_the_bundled_ones(tmp_path):
    with pytest.raises(MissingFileError, match="general, subject, colour"):
        load_tag_vocabulary(tmp_path / "nope.txt")


def test_bundled_vocabularies_load_with_modest_lists_per_category():
    for name in BUNDLED:
        v = load_tag_vocabulary(name)
        assert v.entries, name
    general = load_tag_vocabulary("general")
    assert general.categories == GENERAL
    for c in GENERAL:
        n = sum(e.category == c for e in general.entries)
        assert 20 <= n <= 60, (c, n)  # tens of entries, not thousands
    shapes_vocab = load_tag_vocabulary("shapes")
    from lib_clipcap import shapes

    assert {e.tag for e in shapes_vocab.entries if e.category == "colour"} == set(shapes.COLORS)
    assert {e.tag for e in shapes_vocab.entries if e.category == "shape"} == set(shapes.SHAPES)
    assert {e.tag for e in shapes_vocab.entries if e.category == "size"} == set(shapes.SIZES)


def test_sbg_vocabulary_loads_as_a_tag_vocabulary_with_its_hierarchy_as_categories():
    v = load_tag_vocabulary(ROOT / "lib_clipcap" / "sbg" / "data" / "shapes.json")
    cat = {e.tag: e.category for e in v.entries}
    assert cat["red"] == "adjective" and cat["circle"] == "noun"
    assert cat["small"] == "size" and cat["red circle"] == "object"  # hierarchy levels name the categories
    assert len(v.tags) == len(set(v.tags))
    assert load_tag_vocabulary("sbg-natural").tags[:3] == ("man", "woman", "boy")


def test_content_hash_follows_what_clip_sees_only():
    a = parse_text_vocabulary("colour: red\n", source="a.txt")
    assert parse_text_vocabulary("colour: red  # a comment\n", source="b.txt").content_hash == a.content_hash
    assert parse_text_vocabulary("colour: red | crimson\n").content_hash != a.content_hash
    assert parse_text_vocabulary("@template colour: a {}.\ncolour: red\n").content_hash != a.content_hash


# ------------------------------------------------------------------------------------------------ cache
class _FakeClip:
    """A text encoder that counts its calls (features: a hash of each text)."""

    def __init__(self, name="fake", seed=0):
        self.name, self.pretrained = name, "none"
        self.model = torch.nn.Linear(4, 4)
        torch.manual_seed(seed)
        torch.nn.init.normal_(self.model.weight)
        self.embed_dim = 8
        self.device = torch.device("cpu")
        self.calls = 0

    def encode_texts(self, texts, normalize=True, batch_size=256):
        self.calls += 1
        w = float(self.model.weight.detach()[0, 0])
        g = [torch.Generator().manual_seed(int(hashlib.sha256(f"{t}|{w}".encode()).hexdigest()[:8], 16))
             for t in texts]
        f = torch.stack([torch.randn(self.embed_dim, generator=x) for x in g])
        return f / f.norm(dim=-1, keepdim=True)

    def encode_images(self, pixels):
        return pixels


def test_cache_hit_miss_and_invalidation_on_vocabulary_and_model_change(tmp_path):
    v1 = parse_text_vocabulary("colour: red\ncolour: blue\n")
    v2 = parse_text_vocabulary("colour: red\ncolour: blue | navy\n")
    clip = _FakeClip()
    c = TagTextCache(tmp_path)
    f1 = c.get(clip, v1)
    assert (c.misses, c.hits, clip.calls) == (1, 0, 1)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and files[0].name.startswith("fake-")
    again = TagTextCache(tmp_path)  # a new process: from disk, no encoding
    assert torch.equal(again.get(clip, v1).prompts, f1.prompts)
    assert (again.hits, again.misses, clip.calls) == (1, 0, 1)
    c.get(clip, v2)  # another vocabulary content
    assert (c.misses, clip.calls) == (2, 2)
    other = _FakeClip(seed=1)  # same name, other weights
    assert cache_key(other, v1) != cache_key(clip, v1)
    TagTextCache(tmp_path).get(other, v1)
    assert other.calls == 1
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_damaged_cache_file_is_a_miss_and_is_rewritten(tmp_path):
    v = parse_text_vocabulary("colour: red\n")
    clip = _FakeClip()
    TagTextCache(tmp_path).get(clip, v)
    (f,) = tmp_path.glob("*.safetensors")
    f.write_bytes(b"not safetensors")
    c = TagTextCache(tmp_path)
    c.get(clip, v)
    assert (c.misses, clip.calls) == (1, 2)
    assert TagTextCache(tmp_path).get(clip, v).prompts.shape == (1, 8)


def test_cache_with_the_real_tiny_clip_reencodes_after_a_model_change(tiny_clip, tmp_path):
    from lib_clipcap.clip import ClipBackbone

    v = load_tag_vocabulary("shapes")
    t1 = Tagger(tiny_clip, v, cache=tmp_path)
    assert (t1.cache.misses, t1.cache.encode_calls) == (1, 1)
    t2 = Tagger(tiny_clip, v, cache=tmp_path)
    assert (t2.cache.hits, t2.cache.encode_calls) == (1, 0)
    torch.manual_seed(0)
    random_clip = ClipBackbone.load(str(ASSETS / "clip_configs" / "shapes-tiny.json"), None)
    t3 = Tagger(random_clip, v, cache=tmp_path)
    assert t3.cache.encode_calls == 1 and not torch.equal(t3.text.prompts, t2.text.prompts)


# ------------------------------------------------------------------------------------------------ selection
VOCAB = parse_text_vocabulary("colour: red | crimson\ncolour: blue\ncolour: green\nshape: circle\nshape: blue sky\n"
                              "shape: square\nbackground: white background\n")
#                  red   blue  green circle blue-sky square white-bg
SCORES = torch.tensor([0.9, 0.5, 0.1, 0.8, 0.35, 0.2, 0.95])


def _tags(**kw) -> list[tuple[str, str]]:
    return [(t.tag, t.category) for t in select_tags(SCORES, VOCAB, TagSelection(**kw))]


def test_threshold_orders_by_score_and_keeps_scores():
    tags = select_tags(SCORES, VOCAB, TagSelection(threshold=0.3))
    assert [t.tag for t in tags] == ["white background", "red", "circle", "blue", "blue sky"]
    assert tags[0] == Tag("white background", "background", pytest.approx(0.95))
    assert _tags(threshold=0.85) == [("white background", "background"), ("red", "colour")]


def test_max_tags_and_category_limits():
    assert [t for t, _ in _tags(threshold=0.0, max_tags=3)] == ["white background", "red", "circle"]
    assert [t for t, _ in _tags(threshold=0.3, category_limits={"colour": 1, "shape": 0})] == [
        "white background", "red"]
    with pytest.raises(TagOptionError, match="has no category 'color'; its categories: 'colour'"):
        _tags(category_limits={"color": 1})


def test_order_by_category_follows_the_vocabulary():
    assert [t for t, _ in _tags(threshold=0.3, order="category")] == [
        "red", "blue", "circle", "blue sky", "white background"]


def test_exclude_matches_names_and_aliases_case_and_underscores():
    assert [t for t, _ in _tags(threshold=0.3, exclude=["Crimson", "blue_sky"])] == [
        "white background", "circle", "blue"]


def test_always_first_trigger_replacements_and_underscore_style():
    tags = select_tags(SCORES, VOCAB, TagSelection(threshold=0.3, always_first=["circle", "green", "blue"],
                                                   trigger=["sks", "my_token"],
                                                   replacements={"white background": "simple background",
                                                                 "red": ""},
                                                   style="underscore"))
    # triggers verbatim and first; always-first ones found in their order (green was not chosen); red dropped
    assert [t.tag for t in tags] == ["sks", "my_token", "circle", "blue", "simple_background", "blue_sky"]
    assert tags[0] == Tag("sks", "trigger", None)
    # a chosen tag equal to a trigger is not written twice; two tags replaced by one text appear once
    assert [t for t, _ in _tags(threshold=0.3, trigger="red", replacements={"blue": "circle"})] == [
        "red", "white background", "circle", "blue sky"]


def test_formatter_text_byte_for_byte():
    tags = select_tags(SCORES, VOCAB, TagSelection(threshold=0.3, trigger="sks", style="underscore", max_tags=4))
    assert format_tags(tags) == "sks, white_background, red, circle, blue"
    assert format_tags(tags).encode() == b"sks, white_background, red, circle, blue"
    assert format_tags([]) == ""
    assert format_tags(["a", Tag("b", "", 1.0)], separator=",") == "a,b"


@pytest.mark.parametrize("kw, message", [
    ({"threshold": 1.5}, "threshold=1.5 is invalid"),
    ({"scoring": "cosine"}, "needs a threshold"),
    ({"scoring": "softmax"}, "scoring='softmax' is invalid"),
    ({"max_tags": 0}, "max_tags=0 is invalid"),
    ({"category_limits": {"colour": -1}}, r"category_limits\['colour'\]=-1"),
    ({"exclude": ["a, b"]}, "contains ','"),
    ({"trigger": [""]}, "trigger: '' is not a tag"),
    ({"style": "snake"}, "style='snake' is invalid"),
    ({"order": "alpha"}, "order='alpha' is invalid"),
    ({"replacements": {"a": "b, c"}}, r"replacements\['a'\]='b, c' is invalid"),
])
def test_bad_selection_values_are_named(kw, message):
    with pytest.raises(TagOptionError, match=message):
        TagSelection(**kw)


def test_probability_scores_sum_to_one_within_each_category(tiny_clip):
    from lib_clipcap.tags.ranking import score_tags

    t = Tagger(tiny_clip, "shapes", cache=None)
    feats = torch.randn(3, tiny_clip.embed_dim)
    p = score_tags(feats, t.text, t.vocabulary, logit_scale=t.logit_scale)
    cats = [e.category for e in t.vocabulary.entries]
    for c in set(cats):
        cols = [i for i, x in enumerate(cats) if x == c]
        assert torch.allclose(p[:, cols].sum(-1), torch.ones(3), atol=1e-5)
    cos = t.scores(feats, scoring="cosine")
    assert cos.shape == (3, len(cats)) and float(cos.abs().max()) <= 1.0 + 1e-5


# ------------------------------------------------------------------------------------------------ end to end
def test_end_to_end_single_colour_image_gets_its_colour_tag(demo_captioner, tmp_path):
    from lib_clipcap import shapes

    scenes = [s for s in shapes.make_scenes(shapes.HELDOUT_SEED, 40) if len(s.shapes) == 1][:6]
    paths = []
    for i, s in enumerate(scenes):
        paths.append(tmp_path / f"s{i}.png")
        s.render().save(paths[-1])
    results = tag_images(demo_captioner, paths, "shapes", {"trigger": "sks"}, cache=tmp_path / "cache")
    for s, tags in zip(scenes, results):
        assert tags[0] == Tag("sks", "trigger", None)
        colours = [t.tag for t in tags if t.category == "colour"]
        assert colours == [s.shapes[0].color], (s.captions[0], tags)
    with pytest.raises(ImageLoadError, match="cannot tag"):
        tag_images(demo_captioner, [b"junk"], "shapes", cache=None)


def test_caption_and_tag_encodes_each_image_once(demo_captioner, monkeypatch):
    from lib_clipcap import shapes

    tagger = Tagger(demo_captioner, "shapes", cache=None)
    calls = []
    real = demo_captioner.clip.encode_images
    monkeypatch.setattr(demo_captioner.clip, "encode_images", lambda px, **kw: calls.append(len(px)) or real(px, **kw))
    scene = [s for s in shapes.make_scenes(shapes.HELDOUT_SEED, 20) if len(s.shapes) == 1][0]
    out = caption_and_tag(demo_captioner, tagger, [scene.render(), b"junk"], decoding="greedy")
    assert calls == [1]  # one encoding for the loadable image; caption and tags share it
    (res, tags), (bad, none) = out
    assert res.error is None and res.text and scene.shapes[0].color in [t.tag for t in tags]
    assert bad.error and none == []


# ------------------------------------------------------------------------------------------------ batch tagging
HAND = "my own words"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """One models folder for the module: the shapes vocabulary's text features are encoded once, then cached."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def tag_set(tmp_path, monkeypatch, models_dir):
    """3 shapes images (seed 3); the first has a hand-written caption."""
    monkeypatch.setenv("CLIPCAP_MODELS_DIR", str(models_dir))
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    from _batch_data import shapes_pngs

    imgs = shapes_pngs(tmp_path / "set", 3, seed=3, prefix="img")
    imgs[0].with_suffix(".txt").write_bytes(HAND.encode())
    return tmp_path / "set", imgs


def _batch_opts(folder, **kw):
    from lib_clipcap.batch import TagOptions

    kw.setdefault("workers", 0)
    kw.setdefault("batch_size", 2)
    kw.setdefault("tag_vocabulary", ["shapes"])
    return TagOptions(inputs=[str(folder)], **kw)


def _sidecars(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.txt"))}


# img01 of seed 3 is "a large yellow triangle on a black background."; the bundled models are committed, so its
# caption and tags are fixed: these are the exact bytes each content mode writes.
IMG01 = {
    "caption": b"sks, a large yellow triangle on a black background.",
    "tags": b"sks, large, yellow, black background, triangle",
    "caption+tags": b"sks, a large yellow triangle on a black background, large, yellow, black background, triangle",
}


@pytest.mark.parametrize("content", ["caption", "tags", "caption+tags"])
def test_batch_sidecar_text_in_each_content_mode_byte_for_byte(demo_captioner, tag_set, content):
    from lib_clipcap.batch import run_tagging

    folder, imgs = tag_set
    s = run_tagging(_batch_opts(folder, content=content, triggers=["sks"]), demo_captioner)
    assert (s.written, s.kept, s.failed) == (2, 1, 0), s.failures
    got = _sidecars(folder)
    assert got["img00.txt"] == HAND.encode()  # existing="skip": the hand-written caption stays
    assert got["img01.txt"] == IMG01[content]
    # the same text the library gives, for the other image too
    (res,) = demo_captioner.caption([str(imgs[2])], decoding="greedy")
    (tags,) = tag_images(demo_captioner, [imgs[2]], "shapes", cache=None)
    tag_text = format_tags(tags)
    want = {"caption": f"sks, {res.text}", "tags": f"sks, {tag_text}",
            "caption+tags": f"sks, {res.text.rstrip('.')}, {tag_text}"}[content]
    assert got["img02.txt"] == want.encode()


@pytest.mark.parametrize("policy", ["skip", "overwrite", "append", "prepend"])
def test_batch_tags_follow_each_existing_caption_policy_and_undo_restores(demo_captioner, tag_set, policy):
    from lib_clipcap.batch import run_tagging
    from lib_clipcap.batch.runs import undo_run

    folder, imgs = tag_set
    before = _sidecars(folder)
    s = run_tagging(_batch_opts(folder, content="tags", existing=policy, triggers=["sks"],
                                tag_style="underscore"), demo_captioner)
    assert s.failed == 0, s.failures
    (tags,) = tag_images(demo_captioner, [imgs[0]], "shapes", {"style": "underscore"}, cache=None)
    own = format_tags(tags)
    assert "black_background" in own or "white_background" in own
    want = {"skip": HAND, "overwrite": f"sks, {own}", "append": f"sks, {HAND}, {own}",
            "prepend": f"sks, {own}, {HAND}"}[policy]
    assert _sidecars(folder)["img00.txt"] == want.encode()
    again = run_tagging(_batch_opts(folder, content="tags", existing=policy, triggers=["sks"],
                                    tag_style="underscore", resume=False), demo_captioner)
    assert again.failed == 0 and _sidecars(folder)["img00.txt"] == want.encode()  # its own part, not stacked
    for summary in (again, s):  # newest first
        for run_id in summary.run_ids.values():
            assert undo_run(folder, run_id).complete
    assert _sidecars(folder) == before  # byte for byte: the hand-written caption back, created files gone


def test_batch_tag_options_are_checked_and_named():
    from lib_clipcap.batch import TagOptions
    from lib_clipcap.options_table import OptionError

    for kw, field_name in [({"content": "words"}, "content"), ({"tag_threshold": 2}, "tag_threshold"),
                           ({"tag_max": 0}, "tag_max"), ({"tag_style": "snake"}, "tag_style"),
                           ({"tag_exclude": ["a, b"]}, "tag_exclude"),
                           ({"tag_category_limits": {"colour": -1}}, "tag_category_limits"),
                           ({"tag_replacements": {"a": "b, c"}}, "tag_replacements")]:
        with pytest.raises(OptionError) as e:
            TagOptions(inputs=["x"], **kw)
        assert e.value.field == field_name, (kw, str(e.value))
    o = TagOptions(inputs=["x"], content="tags", tag_threshold=0, triggers=["sks"], tag_exclude=["red"])
    assert o.tag_selection().threshold == 0.0 and o.tag_selection().exclude == ("red", "sks")
    assert "content" in o.signature_fields() and "content" not in TagOptions(inputs=["x"]).signature_fields()


def test_batch_run_refuses_an_unknown_category_and_a_vocabulary_outside_the_allowed_folders(demo_captioner, tag_set,
                                                                                            tmp_path):
    from lib_clipcap.batch import run_tagging
    from lib_clipcap.batch.errors import PathNotAllowedError

    folder, _ = tag_set
    before = _sidecars(folder)
    from lib_clipcap.options_table import OptionError

    with pytest.raises(OptionError, match="has no category 'color'") as e:
        run_tagging(_batch_opts(folder, content="tags", tag_category_limits={"color": 1}), demo_captioner)
    assert e.value.field == "tag_category_limits"
    outside = _write(tmp_path, "secret.txt", "colour: red\n")
    with pytest.raises(PathNotAllowedError):
        run_tagging(_batch_opts(folder, content="tags", tag_vocabulary=[str(outside)]), demo_captioner,
                    allowed_roots=[folder.resolve()])
    assert _sidecars(folder) == before


def test_tag_command_line_flags_build_the_options():
    import argparse

    from lib_clipcap.batch.cli import add_arguments, options_from_args, run

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["ds", "--content", "caption+tags", "--tag-vocabulary", "shapes", "--tag-threshold", "0.2",
                         "--tag-max", "5", "--tag-limit", "colour=2", "--tag-exclude", "red", "--tag-always-first",
                         "circle", "--tag-replace", "white background", "simple background", "--tag-style",
                         "underscore", "--tag-order", "category"])
    o = options_from_args(args)
    assert (o.content, o.tag_vocabulary, o.tag_threshold, o.tag_max) == ("caption+tags", ["shapes"], 0.2, 5)
    assert o.tag_category_limits == {"colour": 2} and o.tag_replacements == {"white background": "simple background"}
    assert (o.tag_exclude, o.tag_always_first, o.tag_style, o.tag_order) == (["red"], ["circle"], "underscore",
                                                                             "category")
    bad = p.parse_args(["ds", "--content", "tags", "--tag-limit", "colour=two"])
    assert run(bad) == 2
