"""The cached, batched decoder against the original per-image uncached loops, and every option's effect."""

from __future__ import annotations

import pytest
import torch

from lib_clipcap.decoding import DecodingOptions, decode
from lib_clipcap.errors import DecodingError
from lib_clipcap.gpt2 import GPT2Config, GPT2LMHead
from devtools.reference import original_beam, original_greedy

STOP = [7, 49]


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    m = GPT2LMHead(GPT2Config(vocab_size=50, n_positions=96, n_embd=32, n_layer=2, n_head=4, eos_token_id=49)).eval()
    with torch.no_grad():  # sharper distributions make decoding paths differ more between settings
        m.transformer.wte.weight.mul_(8)
    return m


@pytest.fixture(scope="module")
def prefixes():
    return torch.randn(6, 4, 32, generator=torch.Generator().manual_seed(1))


def run(lm, prefixes, **kw):
    return decode(lm, prefixes, DecodingOptions(**kw), stop_ids=STOP, pad_id=49)


def test_batched_greedy_matches_original_loop(lm, prefixes):
    out = run(lm, prefixes, mode="greedy", max_new_tokens=20)
    for i in range(len(prefixes)):
        assert out[i][0].tokens == original_greedy(lm, prefixes[i : i + 1], stop_ids=STOP, max_new_tokens=20)


@pytest.mark.parametrize("beam", [1, 3, 5])
def test_batched_beam_matches_original_generate_beam(lm, prefixes, beam):
    out = run(lm, prefixes, mode="beam", beam_size=beam, num_candidates=beam, max_new_tokens=20)
    for i in range(len(prefixes)):
        ref = original_beam(lm, prefixes[i : i + 1], stop_ids=STOP, beam_size=beam, max_new_tokens=20)
        assert [h.tokens for h in out[i]] == [t for t, _ in ref]
        assert [h.score for h in out[i]] == pytest.approx([s for _, s in ref], abs=1e-5)


def test_fixture_model_parity(demo_captioner):
    """Same check on the real bundled model, through the captioner's own prefix path."""
    from lib_clipcap import shapes

    cap = demo_captioner
    imgs = [s.render() for s in shapes.heldout_scenes(8)]
    feats = cap.clip.encode_images(cap.clip.preprocess_images(imgs))
    prefix = cap.model.prefix_embeddings(feats)
    gpt, stop = cap.model.gpt, cap.stop_ids
    greedy = decode(gpt, prefix, DecodingOptions(mode="greedy"), stop_ids=stop, pad_id=cap.tokenizer.eos_token_id)
    beam = decode(gpt, prefix, DecodingOptions(mode="beam", beam_size=4, num_candidates=4), stop_ids=stop,
                  pad_id=cap.tokenizer.eos_token_id)
    for i in range(len(imgs)):
        assert greedy[i][0].tokens == original_greedy(gpt, prefix[i : i + 1], stop_ids=stop)
        ref = original_beam(gpt, prefix[i : i + 1], stop_ids=stop, beam_size=4)
        assert [h.tokens for h in beam[i]] == [t for t, _ in ref]


def test_left_padded_prompts_decode_like_unpadded(lm):
    """Prompts of different lengths in one batch (SBG keyword prompts) give the same tokens as alone."""
    emb = lm.embed_tokens
    a, b = torch.tensor([[3, 4, 5, 6, 8]]), torch.tensor([[9, 10]])
    alone = [run(lm, emb(x), mode="greedy", max_new_tokens=12)[0][0].tokens for x in (a, b)]
    padded = torch.cat((a, torch.tensor([[0, 0, 0, 9, 10]])))
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]])
    out = decode(lm, emb(padded), DecodingOptions(max_new_tokens=12), stop_ids=STOP, pad_id=49, attention_mask=mask)
    assert [o[0].tokens for o in out] == alone


def test_sampling_really_samples_and_seed_reproduces(lm, prefixes):
    a = run(lm, prefixes, mode="sample", num_candidates=4, seed=123, max_new_tokens=15)
    b = run(lm, prefixes, mode="sample", num_candidates=4, seed=123, max_new_tokens=15)
    c = run(lm, prefixes, mode="sample", num_candidates=4, seed=7, max_new_tokens=15)
    greedy = run(lm, prefixes, mode="greedy", max_new_tokens=15)
    toks = lambda o: [[h.tokens for h in row] for row in o]
    assert toks(a) == toks(b)
    assert toks(a) != toks(c)
    assert any(h.tokens != greedy[i][0].tokens for i, row in enumerate(a) for h in row)
    # candidates come back best first
    assert all(row[k].score >= row[k + 1].score for row in a for k in range(len(row) - 1))


def test_temperature_and_top_p_change_the_output(lm, prefixes):
    toks = lambda o: [[h.tokens for h in row] for row in o]
    base = toks(run(lm, prefixes, mode="sample", num_candidates=3, seed=5, max_new_tokens=15))
    hot = toks(run(lm, prefixes, mode="sample", num_candidates=3, seed=5, temperature=2.5, max_new_tokens=15))
    nucleus = toks(run(lm, prefixes, mode="sample", num_candidates=3, seed=5, top_p=0.3, max_new_tokens=15))
    topk1 = toks(run(lm, prefixes, mode="sample", num_candidates=3, seed=5, top_k=1, max_new_tokens=15))
    greedy = toks(run(lm, prefixes, mode="greedy", max_new_tokens=15))
    assert hot != base and nucleus != base
    # top_k=1 leaves one token at every step: sampling collapses to greedy
    assert all(h == greedy[i][0] for i, row in enumerate(topk1) for h in row)


def test_penalties_and_lengths_take_effect(lm, prefixes):
    greedy = run(lm, prefixes, mode="greedy", max_new_tokens=20)
    # the random model loops on one token; a repeat ban and a penalty must break that
    rep_rows = [i for i, o in enumerate(greedy) if len(o[0].tokens) != len(set(o[0].tokens))]
    assert rep_rows
    ngram = run(lm, prefixes, mode="greedy", no_repeat_ngram_size=1, max_new_tokens=20)
    for i in range(len(prefixes)):
        assert len(ngram[i][0].tokens) == len(set(ngram[i][0].tokens))
    pen = run(lm, prefixes, mode="greedy", repetition_penalty=5.0, max_new_tokens=20)
    assert [o[0].tokens for o in pen] != [o[0].tokens for o in greedy]
    short = run(lm, prefixes, mode="greedy", max_new_tokens=3)
    assert all(len(o[0].tokens) <= 3 for o in short)
    early = [i for i, o in enumerate(greedy) if len(o[0].tokens) < 4]
    assert early, "fixture should have a row that stops early without min_new_tokens"
    longer = run(lm, prefixes, mode="greedy", min_new_tokens=4, max_new_tokens=20)
    assert all(len(longer[i][0].tokens) >= 4 for i in range(len(prefixes)))


def test_banned_sequences_never_appear(lm, prefixes):
    greedy = run(lm, prefixes, mode="greedy", max_new_tokens=20)
    first = greedy[0][0].tokens[0]
    out = run(lm, prefixes, mode="beam", beam_size=3, num_candidates=3, banned_token_ids=((first,),),
              max_new_tokens=20)
    assert all(first not in h.tokens for row in out for h in row)


@pytest.mark.parametrize("kw, msg", [
    (dict(mode="nucleus"), "decoding='nucleus' is invalid: must be one of greedy, beam, sample"),
    (dict(temperature=0), "temperature=0 is invalid: must be greater than 0"),
    (dict(top_p=1.5), "top_p=1.5 is invalid: must be at most 1"),
    (dict(mode="beam", beam_size=2, num_candidates=3), r"num_candidates=3 is invalid: cannot exceed beam_size \(2\)"),
    (dict(mode="greedy", num_candidates=2), "num_candidates=2 is invalid: greedy decoding gives one caption"),
    (dict(max_new_tokens=5, min_new_tokens=6), r"min_new_tokens=6 is invalid: cannot exceed max_new_tokens \(5\)"),
])
def test_bad_options_are_named(kw, msg):
    with pytest.raises(DecodingError, match=msg):
        DecodingOptions(**kw)


def test_the_original_layer_layout_gives_the_same_tokens(lm, prefixes):
    """Benchmarks time the original loop on Hugging Face's Conv1D layout (what the original code ran): same maths."""
    import torch

    from devtools.reference import OriginalConv1D, with_original_layers

    twin = with_original_layers(lm)
    assert any(isinstance(m, OriginalConv1D) for m in twin.modules())
    with torch.inference_mode():
        assert torch.allclose(twin(prefixes), lm(prefixes), atol=1e-5)
    assert original_greedy(twin, prefixes[:1], stop_ids=STOP, max_new_tokens=10) == \
        original_greedy(lm, prefixes[:1], stop_ids=STOP, max_new_tokens=10)
