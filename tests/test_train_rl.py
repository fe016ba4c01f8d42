"""CLIP-S self-critical training on the shapes world: held-out CLIP-S rises, grammar stays >= 0.9."""

from __future__ import annotations

import pytest
import torch
from _train_world import CLIP_MODEL, CLIP_WEIGHTS, make_world, tiny_clipcap_config


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_clip):
    torch.set_num_threads(1)
    return make_world(tmp_path_factory.mktemp("shapes"), tiny_clip)


def test_scst_raises_clip_score_and_keeps_grammar(world, tiny_clip, tmp_path):
    from lib_clipcap import shapes
    from lib_clipcap.captioner import Captioner
    from lib_clipcap.grammar import train_grammar_head
    from lib_clipcap.train.clipcap import train_clipcap
    from lib_clipcap.train.rl import RLTrainConfig, caption_rewards, train_rl

    feats_dir, fs = world
    clean = sorted({c for s in shapes.make_scenes(shapes.TRAIN_SEED, 3000) for c in s.captions})
    grammar, metrics = train_grammar_head(tiny_clip, clean, val_captions=[s.captions[0] for s in
                                                                           shapes.heldout_scenes(100)],
                                          steps=300, batch_size=64, lr=2e-3, finetune_text=True, text_lr=5e-4,
                                          seed=0, log_every=0)
    assert metrics["val_accuracy"] > 0.85
    # A partly trained captioner to start from (the bundled demo model is already near the ceiling).
    start = train_clipcap(tiny_clipcap_config(feats_dir, tmp_path / "mle", max_steps=100), features=fs).checkpoint
    test = fs.select("test")

    def held_out(path):
        cap = Captioner.from_checkpoint(path, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS, device="cpu")
        texts = [r.text for r in cap.caption_features(test.features, cap.decoding_options(max_new_tokens=30))]
        _, clip_s, p_ok = caption_rewards(tiny_clip, test.features, texts, grammar=grammar)
        return float(clip_s.mean()), float((p_ok > 0.5).float().mean())

    clip_before, grammar_before = held_out(start)
    cfg = RLTrainConfig(checkpoint=str(start), features=str(feats_dir), out=str(tmp_path / "rl"),
                        clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS, lr=5e-5, max_steps=40, batch_size=16,
                        samples=4, baseline="mean", grammar_weight=1.0, progress=False, log_every=10, device="cpu")
    tuned = train_rl(cfg, grammar=grammar, features=fs)
    clip_after, grammar_after = held_out(tuned)
    assert clip_after > clip_before, (clip_before, clip_after)
    assert grammar_after >= 0.9, (grammar_before, grammar_after)
    assert (tmp_path / "rl" / "metrics.jsonl").read_text().count("\n") == 4
