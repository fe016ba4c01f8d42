"""One set of decoding defaults: the options table's. The library, the command line, the Caption tab / HTTP API
request model and the WebUI settings all read it, so they cannot drift apart again (they did: the table said beam /
3 candidates / 40 tokens while the library and the CLI said greedy / 1 / 67)."""

from __future__ import annotations

import inspect

from lib_clipcap.options_table import caption_kwargs, decoding_keys, defaults, settings_entries


def _parse(command: str, *argv: str):
    from lib_clipcap.app.cli import all_commands, build_parser

    return build_parser({command: all_commands()[command]}).parse_args([command, *argv])


def test_library_spells_no_decoding_setting_of_its_own():
    """Captioners take the decoding settings as ``**decoding`` resolved by the table (resolve_decoding): no method
    names one with a default of its own, which is how the library and the table drifted apart before."""
    from lib_clipcap.captioner import Captioner
    from lib_clipcap.sbg.guesser import BlindGuesser

    for method in (Captioner.caption, Captioner.decoding_options, BlindGuesser.caption, BlindGuesser.decoding_options):
        params = inspect.signature(method).parameters
        named = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD}
        assert not named & set(decoding_keys()), method.__qualname__
        assert any(p.kind is p.VAR_KEYWORD for p in params.values()), method.__qualname__
    table = defaults()
    assert table["decoding"] == "beam" and table["num_candidates"] == 3 and table["max_new_tokens"] == 40


def test_an_unknown_or_bad_decoding_setting_is_named(demo_captioner):
    import pytest

    from lib_clipcap.errors import DecodingError

    with pytest.raises(DecodingError, match=r"unknown decoding option 'beams'; valid: decoding, beam_size"):
        demo_captioner.caption(["x.png"], beams=3)  # before any image is read
    with pytest.raises(DecodingError, match=r"top_p=1.5 is invalid: must be at most 1"):
        demo_captioner.decoding_options(top_p=1.5)


def test_batch_options_have_a_field_per_decoding_setting():
    """TagOptions has a typed field (its public schema) per table decoding setting, generated from the table, with
    the table's default except the mode (greedy: deterministic, resumable)."""
    from dataclasses import fields

    from lib_clipcap.batch.options import TAG_DECODING_DEFAULTS, TagOptions

    declared = {f.name: f for f in fields(TagOptions)}
    table = defaults()
    missing = [k for k in decoding_keys() if k not in declared]
    assert not missing, f"TagOptions lacks a field for {missing}"
    o = TagOptions(inputs=["x"])
    for k in decoding_keys():
        want = TAG_DECODING_DEFAULTS.get(k, table[k])
        if k == "num_candidates":
            want = 1  # greedy: one caption
        assert getattr(o, k) == want, k


def test_captioner_builds_the_tables_options(demo_captioner):
    table = defaults()
    o = demo_captioner.decoding_options()
    assert (o.mode, o.beam_size, o.num_candidates, o.max_new_tokens) == (
        table["decoding"], table["beam_size"], table["num_candidates"], table["max_new_tokens"])
    assert demo_captioner.decoding_options(decoding="greedy").num_candidates == 1
    assert demo_captioner.decoding_options(decoding="beam", beam_size=2).num_candidates == 2
    assert demo_captioner.decoding_options(decoding="sample").num_candidates == table["num_candidates"]
    (res,) = demo_captioner.caption(["lib_clipcap/assets/samples/" + _a_sample()])
    assert len(res.candidates) == table["num_candidates"]


def _a_sample() -> str:
    from lib_clipcap.registry import package_path

    return sorted(p.name for p in package_path("bundled:assets/samples").iterdir())[0]


def test_caption_command_defaults_are_the_tables():
    from lib_clipcap.app.cli import clipcap_caption_kwargs

    kw = clipcap_caption_kwargs(_parse("caption"))
    expected = caption_kwargs(defaults())
    expected.setdefault("rerank", "none")
    assert {k: v for k, v in kw.items()} == {**expected, "banned_words": [], "seed": None}


def test_tag_and_eval_are_greedy_with_the_tables_other_defaults():
    """Batch tagging and eval choose greedy decoding (one deterministic caption, batch-independent; the published
    figures), and take every other value from the table."""
    from lib_clipcap.app.cli import decoding_kwargs

    table = defaults()
    for command in ("tag", "eval"):
        kw = decoding_kwargs(_parse(command, "x"), method_defaults={"decoding": "greedy"})
        assert kw["decoding"] == "greedy" and kw["num_candidates"] == 1, command
        for key in ("beam_size", "temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size",
                    "max_new_tokens", "min_new_tokens"):
            assert kw[key] == table[key], (command, key)
    beam = decoding_kwargs(_parse("tag", "x", "--decoding", "beam", "--beam-size", "2"),
                           method_defaults={"decoding": "greedy"})
    assert (beam["decoding"], beam["beam_size"], beam["num_candidates"]) == ("beam", 2, 2)


def test_tag_command_builds_the_same_options(tmp_path):
    from lib_clipcap.batch.cli import options_from_args

    o = options_from_args(_parse("tag", str(tmp_path)))
    table = defaults()
    assert (o.decoding, o.num_candidates, o.max_new_tokens, o.beam_size) == (
        "greedy", 1, table["max_new_tokens"], table["beam_size"])


def test_webui_settings_and_ui_defaults_are_the_tables():
    table = defaults()
    for e in settings_entries():
        value = table[e["key"]]
        if e["key"] == "banned_words":
            value = ""
        elif e["key"] == "seed":
            value = -1
        assert e["default"] == value, e["key"]
