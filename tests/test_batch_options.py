"""TagOptions' decoding fields: the same defaults as DecodingOptions (repeated in batch/options.py so that building
options imports no torch; these tests keep the two equal)."""

from __future__ import annotations

from dataclasses import fields

from lib_clipcap.batch.options import TagOptions
from lib_clipcap.decoding import DecodingOptions


def test_decoding_defaults_match_decoding_options():
    tag = {f.name: f.default for f in fields(TagOptions)}
    dec = {f.name: f.default for f in fields(DecodingOptions)}
    dec["decoding"] = dec.pop("mode")
    shared = ("decoding", "beam_size", "num_candidates", "temperature", "top_k", "top_p", "repetition_penalty",
              "no_repeat_ngram_size", "max_new_tokens", "min_new_tokens", "seed")
    assert {k: tag[k] for k in shared} == {k: dec[k] for k in shared}


def test_default_caption_kwargs_build_valid_decoding_options():
    kw = TagOptions(inputs=["x"]).caption_kwargs()
    kw.pop("banned_words")
    opts = DecodingOptions(mode=kw.pop("decoding"), **kw)
    assert opts == DecodingOptions()
