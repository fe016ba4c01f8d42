"""SBG generator training on the shapes world: pairs from the inference keyword extractor, BLEU-1 goes up."""

from __future__ import annotations

import pytest
import torch
from _train_world import CLIP_MODEL, CLIP_WEIGHTS, TOKENIZER, bleu, one_thread_world


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_clip):
    return one_thread_world(tmp_path_factory, tiny_clip)


@pytest.mark.slow
def test_sbg_generator_learns_captions_from_keywords(world, tiny_clip, tmp_path):
    from lib_clipcap.gpt2 import GPT2Config, GPT2LMHead
    from lib_clipcap.sbg import BlindGuesser
    from lib_clipcap.sbg.generator import SbgGenerator
    from lib_clipcap.sbg.keywords import KeywordExtractor
    from lib_clipcap.tokenizer import Tokenizer
    from lib_clipcap.train.sbg import SbgTrainConfig, train_sbg

    feats_dir, fs = world
    cfg = SbgTrainConfig(features=str(feats_dir), out=str(tmp_path / "gen"), vocabulary="shapes", gpt2="scratch",
                         gpt2_layers=2, gpt2_width=64, gpt2_heads=2, gpt2_positions=96, tokenizer=TOKENIZER,
                         batch_size=32, lr=3e-3, warmup_steps=10, max_steps=120, progress=False, log_every=40,
                         device="cpu")
    out = train_sbg(cfg, clip=tiny_clip, features=fs)
    # The training prompts are the ones inference builds: same extractor, same prompt format.
    first = (out / "pairs-sample.txt").read_text().splitlines()[0]
    kw = KeywordExtractor(tiny_clip, "shapes").extract(fs.features[:1])[0].keywords
    assert first.startswith(", ".join(kw) + " ### ")
    guesser = BlindGuesser.from_files(out, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS, vocabulary="shapes",
                                      device="cpu", clip=tiny_clip, cache_dir=tmp_path / "cache")
    test = fs.select("test")
    opts = guesser.decoding_options(decoding="greedy", top_k_candidates=1, max_new_tokens=24)
    trained = bleu([r.text for r in guesser.caption_features(test.features, opts)], test.captions)
    tok = Tokenizer.from_path(TOKENIZER)
    torch.manual_seed(0)
    untrained_gen = SbgGenerator(GPT2LMHead(GPT2Config(vocab_size=tok.vocab_size, n_positions=96, n_embd=64,
                                                       n_layer=2, n_head=2, eos_token_id=tok.eos_token_id)), tok)
    untrained = BlindGuesser(tiny_clip, untrained_gen, guesser.extractor)
    before = bleu([r.text for r in untrained.caption_features(test.features, opts)], test.captions)
    assert trained[0] > before[0] + 0.3, (trained, before)
    assert trained[0] > 0.6
