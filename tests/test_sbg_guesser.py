"""Selective Blind Guessing end to end on the bundled shapes fixture, plus the generator's GPT-2 conventions."""

from __future__ import annotations

import json

import pytest
import torch

from lib_clipcap import shapes
from lib_clipcap.errors import MissingFileError


@pytest.fixture(scope="module")
def sbg(tmp_path_factory):
    from lib_clipcap.sbg import BlindGuesser

    return BlindGuesser.from_pretrained("shapes-sbg", device="cpu", models_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def heldout():
    scenes = shapes.heldout_scenes(60)
    return scenes, [s.render() for s in scenes]


def test_heldout_bleu1_of_top5_and_clip_s_of_top5_over_top1(sbg, heldout):
    from pycocoevalcap.bleu.bleu import Bleu

    scenes, images = heldout
    top1 = sbg.caption(images, top_k_candidates=1, seed=0, batch_size=60)
    top5 = sbg.caption(images, top_k_candidates=5, seed=0, batch_size=60)
    norm = lambda t: t.lower().replace(".", " .").strip()
    gts = {i: [norm(c) for c in s.captions] for i, s in enumerate(scenes)}
    bleu, _ = Bleu(1).compute_score(gts, {i: [norm(r.text)] for i, r in enumerate(top5)}, verbose=0)
    assert bleu[0] >= 0.5, bleu
    mean = lambda res: sum(r.candidates[0].clip_score for r in res) / len(res)
    assert mean(top5) >= mean(top1)
    for r in top5:  # the chosen caption is the candidate CLIP scores best
        assert r.text == r.candidates[0].text
        assert r.candidates[0].clip_score == max(c.clip_score for c in r.candidates)


def test_results_carry_keywords_and_every_candidate_with_its_clip_score(sbg, heldout):
    _, images = heldout
    res = sbg.caption(images[:4], top_k_candidates=5, seed=1, temperature=1.5)
    for r in res:
        assert r.ok and r.keywords and r.text.endswith(".")
        assert 1 <= len(r.candidates) <= 5 and len({c.text for c in r.candidates}) == len(r.candidates)
        assert all(c.clip_score is not None and 0.0 <= c.clip_score <= 2.5 for c in r.candidates)
    kept = sbg.caption(images[:4], top_k_candidates=5, seed=1, temperature=1.5, rerank="none")
    assert all(c.clip_score is not None for r in kept for c in r.candidates)  # scored, not reordered
    assert [r.keywords for r in kept] == [r.keywords for r in res] == sbg.keywords(images[:4])


def test_all_candidates_of_all_images_in_one_batched_cached_call(sbg, heldout, monkeypatch):
    import lib_clipcap.decoding as decoding

    _, images = heldout
    calls = []
    real = decoding.decode

    def spy(gpt, prefix, options, **kw):
        calls.append((prefix.shape[0], options.num_candidates, kw.get("attention_mask")))
        return real(gpt, prefix, options, **kw)

    monkeypatch.setattr(decoding, "decode", spy)
    res = sbg.caption(images[:7], top_k_candidates=5, seed=0, batch_size=16)
    assert len(calls) == 1
    rows, k, mask = calls[0]
    assert (rows, k) == (7, 5)  # 7 prompts, each prefilled once and forked into 5 candidates
    assert mask is not None and mask.shape[0] == 7
    assert len(res) == 7


def test_seeded_sampling_and_options(sbg, heldout):
    _, images = heldout
    a = sbg.caption(images[:6], top_k_candidates=3, seed=7, temperature=2.0, rerank="none")
    b = sbg.caption(images[:6], top_k_candidates=3, seed=7, temperature=2.0, rerank="none")
    c = sbg.caption(images[:6], top_k_candidates=3, seed=8, temperature=2.0, rerank="none")
    texts = lambda res: [[x.text for x in r.candidates] for r in res]
    assert texts(a) == texts(b) and texts(a) != texts(c)
    greedy = sbg.caption(images[:2], decoding="greedy", top_k_candidates=1)
    assert all(len(r.candidates) == 1 for r in greedy)
    with pytest.raises(Exception, match="greedy decoding gives one caption"):
        sbg.caption(images[:1], decoding="greedy", top_k_candidates=3)
    with pytest.raises(Exception, match="threshold"):
        sbg.caption(images[:1], threshold=2.0)


def test_bad_inputs_fail_alone(sbg, heldout, tmp_path):
    _, images = heldout
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    res = sbg.caption([images[0], str(empty)], top_k_candidates=2, seed=0)
    assert res[0].ok and not res[1].ok and "empty.png" in res[1].error


def test_prompt_uses_gpt2s_separator_token_and_left_padding(gpt2_tokenizer_dir):
    from lib_clipcap.gpt2 import GPT2Config, GPT2LMHead
    from lib_clipcap.sbg.generator import SbgGenerator
    from lib_clipcap.tokenizer import Tokenizer

    tok = Tokenizer.from_path(gpt2_tokenizer_dir)
    gen = SbgGenerator(GPT2LMHead(GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=64)), tok)
    prompts = [gen.prompt(["dog", "beach", "running"]), gen.prompt(["man"])]
    assert prompts[1] == "man ###"
    ids, mask = gen.encode_prompts(prompts)
    assert ids[:, -1].tolist() == [44386, 44386]  # " ###", the separator the published generator was trained with
    n_short = len(tok.encode(prompts[1]))
    assert mask[1].tolist() == [0] * (ids.shape[1] - n_short) + [1] * n_short
    assert ids[1, 0].item() == 50256  # EOS as padding
    assert {13, 764, 50256} <= set(gen.stop_ids)  # ".", " ." and EOS end a caption
    out = gen.generate(prompts, __import__("lib_clipcap").DecodingOptions(mode="greedy", max_new_tokens=5))
    assert len(out) == 2 and len(out[0]) == 1


def test_generator_folder_round_trip(sbg, tmp_path):
    from lib_clipcap.decoding import DecodingOptions
    from lib_clipcap.sbg.generator import SbgGenerator

    folder = sbg.generator.save(tmp_path / "gen")
    assert {"config.json", "model.safetensors", "tokenizer.json", "sbg.json"} <= {p.name for p in folder.iterdir()}
    again = SbgGenerator.load(folder, device="cpu", dtype="fp32")
    opts = DecodingOptions(mode="greedy", max_new_tokens=20)
    prompts = ["red, red circle, large, white ###", "blue square, green circle, black ###"]
    assert [[g.text for g in c] for c in again.generate(prompts, opts)] == \
           [[g.text for g in c] for c in sbg.generator.generate(prompts, opts)]


def test_published_generator_missing_says_where_to_put_it(tmp_path):
    from lib_clipcap.registry import get_model, list_models
    from lib_clipcap.sbg import BlindGuesser

    assert {"sbg-flickr", "shapes-sbg"} <= set(list_models("sbg"))
    entry = get_model("sbg-flickr")
    assert (entry.clip.model, entry.clip.pretrained, entry.tokenizer) == ("ViT-L-14", "openai", "gpt2")
    assert entry.source.type == "manual" and entry.vocabulary == "natural"
    with pytest.raises(MissingFileError, match=r"top_hierarchy.*config\.json, model\.safetensors"):
        BlindGuesser.from_pretrained("sbg-flickr", models_dir=tmp_path)


def test_model_manager_serves_sbg(tmp_path, heldout):
    from lib_clipcap.app.service import ModelManager

    _, images = heldout
    mm = ModelManager(models_dir=tmp_path, max_loaded=1)
    res = mm.caption(images[:2], model="shapes-sbg", top_k_candidates=2, seed=0)
    assert len(res) == 2 and all(r.ok and r.keywords for r in res)
    assert list((tmp_path / "cache" / "sbg-text-features").glob("*.safetensors"))  # features cached on disk
    mm.unload()
    assert mm.loaded() == []


def test_cli_sbg_caption_json(tmp_path, capsys):
    from lib_clipcap.app.cli import build_parser
    from lib_clipcap.sbg import cli

    img = tmp_path / "scene.png"
    shapes.heldout_scenes(1)[0].render().save(img)
    argv = ["sbg", "caption", str(img), "--model", "shapes-sbg", "--json", "-k", "3", "--seed", "0",
            "--models-dir", str(tmp_path), "--device", "cpu"]
    args = build_parser({"sbg": (cli.HELP, cli.add_arguments, cli.run)}).parse_args(argv)
    assert cli.run(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["text"] and data[0]["keywords"] and data[0]["candidates"][0]["clip_score"] is not None


def test_to_and_unload(sbg):
    sbg.to("cpu")
    assert sbg.device == torch.device("cpu") and "shapes-sbg" in repr(sbg)


def test_loads_an_hf_gpt2_folder_like_the_published_generator(tmp_path, gpt2_tokenizer_dir):
    """``save_pretrained`` layout + GPT-2's tokenizer: our cached decoding continues the prompt exactly as
    transformers' ``generate`` does (greedy), and the text after ``###`` is what we return."""
    transformers = pytest.importorskip("transformers")
    from lib_clipcap.decoding import DecodingOptions
    from lib_clipcap.sbg.generator import SbgGenerator, clean_caption

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128)).eval()
    hf.save_pretrained(tmp_path / "top_hierarchy")
    gen = SbgGenerator.load(tmp_path / "top_hierarchy", tokenizer=str(gpt2_tokenizer_dir), device="cpu",
                            dtype="fp32")
    prompts = [gen.prompt(["dog", "beach", "running"]), gen.prompt(["man"])]  # the second one is left-padded
    got = gen.generate(prompts, DecodingOptions(mode="greedy", max_new_tokens=8))
    for prompt, cands in zip(prompts, got):
        ids = torch.tensor([gen.tokenizer.encode(prompt)])
        with torch.no_grad():
            ref = hf.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=50256,
                              eos_token_id=50256)[0, ids.shape[1]:].tolist()
        stop = next((i for i, t in enumerate(ref) if t in set(gen.stop_ids)), len(ref))
        expected = clean_caption(gen.tokenizer.decode(ref[: stop + 1]))
        assert expected and cands[0].text == expected


def test_batch_and_api_options_reach_sbg_under_their_common_names(sbg):
    from lib_clipcap.batch import TagOptions
    from lib_clipcap.batch.runner import model_options

    opts, extra = model_options(sbg, TagOptions(inputs=["x"], decoding="sample", num_candidates=4, seed=3,
                                                rerank="clip"))
    assert (opts.mode, opts.num_candidates, opts.seed, extra) == ("sample", 4, 3, {"rerank": "clip"})
    assert sbg.decoding_options(decoding="sample", num_candidates=2).num_candidates == 2
