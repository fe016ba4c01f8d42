"""Our GPT-2 and transformers' GPT2LMHeadModel, given the same weights, compute the same logits and tokens.

This is what lets us load any GPT-2 checkpoint and trust our cached decoder, whatever transformers version the
WebUI host pins.
"""

from __future__ import annotations

import pytest
import torch

from lib_clipcap.checkpoint import load_gpt2_weights
from lib_clipcap.decoding import DecodingOptions, decode
from lib_clipcap.gpt2 import GPT2LMHead

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=100, n_positions=64, n_embd=48, n_layer=3, n_head=4, bos_token_id=99, eos_token_id=99)).eval()
    folder = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(folder)  # the real HF file layout (model.safetensors + config.json)
    sd, cfg = load_gpt2_weights(folder)
    ours = GPT2LMHead(cfg).eval()
    ours.load_state_dict({**sd, "lm_head.weight": sd["transformer.wte.weight"]}, strict=False)
    return hf, ours


def test_same_logits(pair):
    hf, ours = pair
    ids = torch.randint(0, 100, (3, 17), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = hf(input_ids=ids).logits
        b = ours(ours.embed_tokens(ids))
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_cached_greedy_equals_transformers_generate(pair):
    hf, ours = pair
    ids = torch.tensor([[5, 17, 42, 8]])
    with torch.no_grad():
        ref = hf.generate(ids, max_new_tokens=12, do_sample=False, num_beams=1, pad_token_id=99, eos_token_id=99)
    got = decode(ours, ours.embed_tokens(ids), DecodingOptions(max_new_tokens=12), stop_ids=[99], pad_id=99)
    expected = ref[0, 4:].tolist()
    if 99 in expected:  # generate() keeps the stop token and pads after it; our decoder returns the caption only
        expected = expected[: expected.index(99)]
    assert expected, "the fixture should generate some tokens before stopping"
    assert got[0][0].tokens == expected
