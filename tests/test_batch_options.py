"""TagOptions: the options table's decoding defaults (greedy, one caption: a batch must be deterministic), and
one-line caption text."""

from __future__ import annotations

from dataclasses import fields

from lib_clipcap.batch.options import TagOptions
from lib_clipcap.decoding import DecodingOptions
from lib_clipcap.options_table import defaults


def test_decoding_defaults_are_the_tables_but_greedy_with_one_caption():
    tag = {f.name: f.default for f in fields(TagOptions)}
    table = defaults()
    shared = ("beam_size", "temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size",
              "max_new_tokens", "min_new_tokens", "seed")
    assert {k: tag[k] for k in shared} == {k: table[k] for k in shared}
    assert (tag["decoding"], tag["num_candidates"]) == ("greedy", 1)


def test_default_caption_kwargs_build_valid_decoding_options():
    kw = TagOptions(inputs=["x"]).caption_kwargs()
    kw.pop("banned_words")
    opts = DecodingOptions(mode=kw.pop("decoding"), **kw)
    assert (opts.mode, opts.num_candidates, opts.max_new_tokens) == ("greedy", 1, defaults()["max_new_tokens"])


def test_caption_text_is_one_line_unless_multiline_is_asked_for():
    import pytest

    from lib_clipcap.batch.policy import final_text
    from lib_clipcap.options_table import OptionError

    for field in ("prefix", "suffix", "separator"):
        for text in ("a\nb", "a\rb", "a\u2028b", "a\x85b", "a\tb"):
            with pytest.raises(OptionError, match=f"{field}=.* line break or tab") as e:
                TagOptions(inputs=["x"], **{field: text})
            assert e.value.field == field
    with pytest.raises(OptionError, match="U\\+001B"):
        TagOptions(inputs=["x"], suffix="\x1b[31m")
    with pytest.raises(OptionError, match="replace"):
        TagOptions(inputs=["x"], replace=[["a", "b\nc"]])
    with pytest.raises(OptionError, match="replace"):
        TagOptions(inputs=["x"], replace=[["a", "b\nc"]], multiline=True)  # the caption itself stays one line
    ok = TagOptions(inputs=["x"], prefix="line one\nline two", suffix="end\tof\ntext", multiline=True)
    assert final_text(None, "a dog", ok)[1] == "line one\nline two, a dog, end\tof\ntext"
    with pytest.raises(OptionError, match="U\\+0000"):
        TagOptions(inputs=["x"], prefix="\x00", multiline=True)  # other control characters: never
    # a model's caption never brings control characters into the file
    plain = TagOptions(inputs=["x"])
    assert final_text(None, "a red\ncircle\x1b[0m\x00 on\u2028white", plain) == ("a red circle[0m on white",) * 2


def test_the_command_line_has_multiline():
    import argparse

    import pytest

    from lib_clipcap.batch.cli import add_arguments, options_from_args
    from lib_clipcap.options_table import OptionError

    p = argparse.ArgumentParser()
    add_arguments(p)
    with pytest.raises(OptionError, match="set multiline"):
        options_from_args(p.parse_args(["ds", "--prefix", "a\nb"]))
    assert options_from_args(p.parse_args(["ds", "--prefix", "a\nb", "--multiline"])).prefix == "a\nb"
