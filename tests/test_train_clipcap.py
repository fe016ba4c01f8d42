"""ClipCap training and feature extraction on the shapes world (tiny configs, CPU, seconds each)."""

from __future__ import annotations

import json

import pytest
import torch
from _train_world import (ASSETS, CLIP_MODEL, CLIP_WEIGHTS, TOKENIZER, bleu, caption_texts, make_world,
                          tiny_clipcap_config)

from lib_clipcap.errors import ClipCapError

GREEDY = dict(decoding="greedy", max_new_tokens=24)  # the captions BLEU is computed on


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_clip):
    torch.set_num_threads(1)  # the machine is shared; tiny models do not gain from threads
    return make_world(tmp_path_factory.mktemp("shapes"), tiny_clip)


@pytest.mark.slow
def test_features_resume_and_record_normalisation(world, tiny_clip, tmp_path):
    from lib_clipcap.eval.datasets import load_dataset
    from lib_clipcap.train.features import extract_features, load_features

    folder, fs = world
    assert fs.features.shape == (500, tiny_clip.embed_dim) and fs.meta["normalized"] is False
    assert len(fs.select("train")) == 400 and len(fs.select("test")) == 100
    assert fs.captions[0][0].endswith("background.")
    ds = load_dataset(folder.parent / "captions.txt", split="all", test_images=100).head(90)
    out = tmp_path / "f"
    kw = dict(clip=tiny_clip, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS, batch_size=20, workers=1,
              shard_size=40, progress=False)
    extract_features(ds, out, **kw)
    shards = sorted(out.glob("features-*.safetensors"))
    assert len(shards) == 3
    first = load_features(out).features
    assert torch.allclose(first, fs.features[:90], atol=1e-5)
    kept = shards[0].stat().st_mtime_ns
    shards[1].unlink()  # an interrupted run: one shard missing
    extract_features(ds, out, **kw)
    assert shards[0].stat().st_mtime_ns == kept and shards[1].is_file()  # only the missing shard was redone
    assert torch.equal(load_features(out).features, first)
    with pytest.raises(ClipCapError, match="normalized"):
        extract_features(ds, out, **{**kw, "normalize": True})


def test_padding_is_masked_never_token_zero():
    from lib_clipcap.train.data import collate

    tokens, labels = collate([[0, 5, 9], [7, 9]], pad_id=9)
    assert tokens.tolist() == [[0, 5, 9], [7, 9, 9]]
    assert labels.tolist() == [[0, 5, 9], [7, 9, -100]]  # token 0 ("!" in GPT-2) is learned; padding is not


@pytest.mark.slow
def test_mlp_with_gradient_clipping_improves_bleu4(world, tiny_clip, tmp_path):
    from lib_clipcap.captioner import Captioner
    from lib_clipcap.model import ClipCapModel
    from lib_clipcap.tokenizer import Tokenizer
    from lib_clipcap.train.clipcap import train_clipcap

    feats_dir, fs = world
    test = fs.select("test")
    cfg = tiny_clipcap_config(feats_dir, tmp_path / "run", grad_clip=1.0, max_steps=120)
    result = train_clipcap(cfg, features=fs)
    tok = Tokenizer.from_path(TOKENIZER)
    cap = Captioner.from_checkpoint(result.checkpoint, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS,
                                    device="cpu")  # strict key matching
    trained = bleu(caption_texts(cap.model, tok, tiny_clip, test.features), test.captions)
    torch.manual_seed(cfg.seed)
    untrained_model = ClipCapModel(cap.model.config)
    untrained = bleu(caption_texts(untrained_model, tok, tiny_clip, test.features), test.captions)
    assert trained[3] > untrained[3] + 0.3, (trained, untrained)
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [20, 40, 60, 80, 100, 120]
    assert log[-1]["loss"] < log[0]["loss"] / 3 and "grad_norm" in log[0]
    assert cap.model.config.normalize and cap.model.config.tokenizer.endswith("tokenizer.json")


@pytest.mark.slow
def test_custom_tokenizer_variant_trains(world, tiny_clip, tmp_path):
    from lib_clipcap.captioner import Captioner

    feats_dir, fs = world
    from lib_clipcap.train.clipcap import train_clipcap

    result = train_clipcap(tiny_clipcap_config(feats_dir, tmp_path / "run", tokenizer="custom",
                                               custom_vocab_size=300, max_steps=100), features=fs)
    tj = json.loads((tmp_path / "run" / "tokenizer.json").read_text())
    assert all(isinstance(m, str) for m in tj["model"]["merges"]) and "ignore_merges" not in tj["model"]
    cap = Captioner.from_checkpoint(result.checkpoint, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS,
                                    device="cpu")
    assert cap.tokenizer.vocab_size <= 300 and cap.model.config.gpt2.vocab_size == cap.tokenizer.vocab_size
    test = fs.select("test")
    texts = [r.text for r in cap.caption_features(test.features, cap.decoding_options(**GREEDY))]
    assert bleu(texts, test.captions)[3] > 0.3
    # The tokenizer is recorded relative to the checkpoint, so the trained folder can be moved or shared.
    assert json.loads((tmp_path / "run" / "clipcap.json").read_text())["tokenizer"] == "./tokenizer.json"
    step = json.loads((tmp_path / "run" / "checkpoints" / "step-0000100.json").read_text())
    assert step["tokenizer"] == "../tokenizer.json"
    moved = (tmp_path / "run").rename(tmp_path / "moved")
    again = Captioner.from_checkpoint(moved / "clipcap.safetensors", clip_model=CLIP_MODEL,
                                      clip_pretrained=CLIP_WEIGHTS, device="cpu")
    assert again.config.tokenizer == str((moved / "tokenizer.json").resolve())
    assert [r.text for r in again.caption_features(test.features[:5], again.decoding_options(**GREEDY))] \
        == texts[:5]


def _gpt2_folder(path):
    """An HF-format GPT-2 folder standing in for the pretrained GPT-2 a prefix-only run keeps frozen: the tiny GPT-2
    of the bundled demo model (a language model of shapes captions, as GPT-2 is one of English)."""
    from safetensors.torch import save_file

    from lib_clipcap.checkpoint import load_config

    config, sd = load_config(ASSETS / "shapes" / "clipcap.safetensors")
    gpt = {k[4:]: v.contiguous() for k, v in sd.items() if k.startswith("gpt.")}
    path.mkdir()
    save_file(gpt, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2", **config.gpt2.to_dict()}))
    gpt["lm_head.weight"] = gpt["transformer.wte.weight"]
    return gpt


@pytest.mark.slow
def test_prefix_only_transformer_trains_only_the_mapper(world, tmp_path):
    from lib_clipcap.captioner import Captioner
    from lib_clipcap.checkpoint import read_state_dict
    from lib_clipcap.train.clipcap import train_clipcap

    feats_dir, fs = world
    base = _gpt2_folder(tmp_path / "gpt2-tiny")
    cfg = tiny_clipcap_config(feats_dir, tmp_path / "run", mapping="transformer", clip_length=4, mapper_layers=2,
                              mapper_heads=2, prefix_only=True, gpt2=str(tmp_path / "gpt2-tiny"), max_steps=60)
    result = train_clipcap(cfg, features=fs)
    sd = read_state_dict(result.checkpoint)
    assert not any(k.startswith("gpt.") for k in sd)  # only the mapper is stored; the config names the base
    cap = Captioner.from_checkpoint(result.checkpoint, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS,
                                    gpt2=str(tmp_path / "gpt2-tiny"), device="cpu")
    assert cap.model.config.mapping == "transformer" and not cap.model.config.has_gpt_weights
    for k, v in cap.model.gpt.state_dict().items():
        assert torch.equal(v, base[k]), k
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] * 0.5
    test = fs.select("test")
    texts = [r.text for r in cap.caption_features(test.features, cap.decoding_options(**GREEDY))]
    assert bleu(texts, test.captions)[3] > 0.3


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(world, tmp_path):
    from lib_clipcap.checkpoint import read_state_dict
    from lib_clipcap.train.clipcap import latest_checkpoint, train_clipcap

    feats_dir, fs = world
    kw = dict(max_steps=30, save_every=10, log_every=10)
    whole = train_clipcap(tiny_clipcap_config(feats_dir, tmp_path / "a", **kw), features=fs)
    cut = train_clipcap(tiny_clipcap_config(feats_dir, tmp_path / "b", **kw), features=fs, stop_after=20)
    assert cut.steps == 20 and latest_checkpoint(tmp_path / "b").name == "step-0000020.safetensors"
    resumed = train_clipcap(tiny_clipcap_config(feats_dir, tmp_path / "b", **kw), features=fs, resume=True)
    assert resumed.steps == 30 and [h["step"] for h in resumed.history] == [30]
    a, b = read_state_dict(whole.checkpoint), read_state_dict(resumed.checkpoint)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    with pytest.raises(ClipCapError, match="settings changed"):
        train_clipcap(tiny_clipcap_config(feats_dir, tmp_path / "b", **{**kw, "lr": 1e-3}), features=fs, resume=True)


@pytest.mark.slow
def test_a_run_started_before_the_decay_grouping_resumes_exactly(world, tmp_path, monkeypatch):
    """Checkpoints written before AdamW's decay/no-decay grouping hold one parameter group: resuming one continues
    with that optimizer (the same result as the old run uninterrupted), instead of failing to load its state."""
    import lib_clipcap.train.clipcap as tc
    from lib_clipcap.checkpoint import read_state_dict

    feats_dir, fs = world
    kw = dict(max_steps=30, save_every=10, log_every=10)

    def one_group(named, *, lr, weight_decay):  # what the trainer built before the grouping
        return torch.optim.AdamW([p for _, p in named if p.requires_grad], lr=lr, weight_decay=weight_decay)

    with monkeypatch.context() as m:
        m.setattr(tc, "adamw_no_decay_on_vectors", one_group)
        old_whole = tc.train_clipcap(tiny_clipcap_config(feats_dir, tmp_path / "a", **kw), features=fs)
        tc.train_clipcap(tiny_clipcap_config(feats_dir, tmp_path / "b", **kw), features=fs, stop_after=20)
    resumed = tc.train_clipcap(tiny_clipcap_config(feats_dir, tmp_path / "b", **kw), features=fs, resume=True)
    assert resumed.steps == 30
    a, b = read_state_dict(old_whole.checkpoint), read_state_dict(resumed.checkpoint)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
