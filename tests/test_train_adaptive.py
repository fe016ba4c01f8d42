"""The data-sized training recipe: schedule derivation, which settings it fills, early stopping and the kept
checkpoint on a toy run, training-only dropout that leaves checkpoints and inference alone, AdamW groups, label
smoothing, and augmented feature shards (written, read back, read by a version-1 reader, refused when too new).

Toy-sized and deterministic (one torch thread, fixed seeds); each test takes a few seconds at most.
"""

from __future__ import annotations

import json

import pytest
import torch
from _train_world import ASSETS, CLIP_MODEL, CLIP_WEIGHTS

from lib_clipcap.errors import ClipCapError
from lib_clipcap.train.recipe import PAPER, data_schedule, resolve_recipe, scratch_lr

TINY = dict(gpt2="scratch", gpt2_layers=1, gpt2_width=32, gpt2_heads=2, gpt2_positions=48, prefix_length=2,
            save_every=0, progress=False, device="cpu", max_tokens=16)


# ------------------------------------------------------------------------------------------ schedule derivation
def test_data_schedule_numbers_for_1000_images():
    s = data_schedule(1000, 5, 64)
    assert (s.val_images, s.train_images, s.steps_per_epoch) == (200, 800, 63)  # 800 x 5 / 64 = 62.5
    assert s.epochs == 67  # 60 * sqrt(1000 / 800) = 67.1
    assert (s.warmup_steps, s.eval_every, s.patience) == (100, 141, 6)  # 67 * 63 / 30 = 140.7
    assert s.max_steps == 67 * 63 and s.eval_every_epochs == pytest.approx(141 / 63)


def test_data_schedule_adapts_to_the_size():
    sizes = [500, 1000, 2000, 5000, 10000, 20000, 100000]
    runs = [data_schedule(n, 5, 64) for n in sizes]
    epochs = [r.epochs for r in runs]
    assert epochs == sorted(epochs, reverse=True) and epochs[0] <= 80 and epochs[-1] == 8  # fewer passes...
    steps = [r.max_steps for r in runs]
    assert steps == sorted(steps)  # ...but more steps as the set grows
    assert [r.val_images for r in runs] == [100, 200, 200, 500, 500, 500, 500]  # 10%, 200..500, <= a fifth
    assert all(100 <= r.warmup_steps <= 1000 and r.warmup_steps <= r.max_steps for r in runs)
    assert all(r.max_steps / r.eval_every == pytest.approx(30, rel=0.05) for r in runs)
    assert data_schedule(1000, 5, 64, val_images=0).train_images == 1000  # a separate validation split
    with pytest.raises(ValueError):
        data_schedule(1, 5, 64)
    with pytest.raises(ValueError, match="leaves no training image"):
        data_schedule(100, 5, 64, val_images=100)


def _cfg(**kw):
    from lib_clipcap.train.clipcap import ClipCapTrainConfig

    return ClipCapTrainConfig(**{"features": "-", "out": "-", **kw})


def test_resolve_recipe_fills_only_what_is_unset():
    cfg, desc = resolve_recipe(_cfg(gpt2="scratch", gpt2_width=64), images=1000, captions_per_image=5,
                               has_val_split=False)
    assert desc.startswith("data-sized recipe for 1000 images (200 held out)")
    assert (cfg.epochs, cfg.max_steps, cfg.val_images, cfg.eval_every, cfg.patience) == (67, None, 200, 141, 6)
    assert (cfg.lr, cfg.batch_size, cfg.schedule, cfg.standardize_init) == (3e-3, 64, "cosine", True)
    assert cfg.dropout > 0 and cfg.mapper_dropout > 0 and cfg.label_smoothing > 0 and cfg.weight_decay > 0
    given, _ = resolve_recipe(_cfg(gpt2="scratch", patience=2, dropout=0.0, batch_size=32), images=1000,
                              captions_per_image=5, has_val_split=False)
    assert (given.patience, given.dropout, given.batch_size) == (2, 0.0, 32)
    assert given.eval_every == round(data_schedule(1000, 5, 32).max_steps / 30)  # derived with the given batch
    assert resolve_recipe(_cfg(gpt2="scratch"), images=1000, captions_per_image=5,
                          has_val_split=True)[0].val_images == 0
    assert scratch_lr(768) == pytest.approx(2.5e-4)


@pytest.mark.parametrize("kw", [dict(gpt2="gpt2"), dict(gpt2="scratch", max_steps=100),
                                dict(gpt2="scratch", epochs=3)])
def test_paper_settings_outside_the_data_recipe(kw):
    cfg, _ = resolve_recipe(_cfg(**kw), images=1000, captions_per_image=5, has_val_split=False)
    for k, v in PAPER.items():
        if k not in kw:
            assert getattr(cfg, k) == v, k
    assert (cfg.epochs, cfg.lr, cfg.warmup_steps, cfg.schedule, cfg.val_images, cfg.dropout) == (
        kw.get("epochs", 10), 2e-5, 5000, "linear", 0, 0.0)


# ---------------------------------------------------------------------------------------------- toy training
WORDS = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "star")]


def toy_features(n: int = 64, views: int = 0, seed: int = 0):
    """n images of four kinds: a noisy one-hot feature per kind, two paraphrases each."""
    from lib_clipcap.train.features import FeatureSet

    g = torch.Generator().manual_seed(seed)
    kinds = [i % len(WORDS) for i in range(n)]
    feats = torch.eye(16)[kinds] + 0.3 * torch.randn(n, 16, generator=g)
    caps = [[f"a {WORDS[k][0]} {WORDS[k][1]}.", f"there is a {WORDS[k][0]} {WORDS[k][1]}.",
             f"the picture shows a {WORDS[k][0]} {WORDS[k][1]}."] for k in kinds]
    extra = feats[:, None] + 0.05 * torch.randn(n, views, 16, generator=g) if views else None
    return FeatureSet(feats, [str(i) for i in range(n)], caps, ["train"] * n, [f"{i}.jpg" for i in range(n)],
                      {"clip_model": None, "clip_pretrained": None}, torch.ones(n, dtype=torch.bool), extra)


def test_early_stop_keeps_the_best_validated_checkpoint(tmp_path):
    from lib_clipcap.checkpoint import read_state_dict
    from lib_clipcap.train.clipcap import train_clipcap

    torch.set_num_threads(1)
    # The data recipe, with a lr so high that the tiny model gets worse after its first validations: the run must
    # stop on patience and keep an earlier checkpoint.
    cfg = _cfg(**{**TINY, "out": str(tmp_path / "run")}, lr=0.05, patience=2, eval_every=4, warmup_steps=1,
               val_images=16, schedule="constant")
    result = train_clipcap(cfg, features=toy_features())
    vals = [r for r in result.history if "val_CIDEr" in r]
    assert result.stopped_early and result.steps < result.config.epochs * result.steps_per_epoch
    assert result.stop_reason.startswith(f"stopped early at step {result.steps}") and "patience 2" in \
        result.stop_reason
    best = max(vals, key=lambda r: r["val_CIDEr"])  # the first of equal values wins: "equal is not better"
    assert result.best_step == best["step"] and result.best_value == best["val_CIDEr"]
    assert [r["step"] for r in vals][-2:] == [best["step"] + 4, best["step"] + 8]  # exactly `patience` after it
    final, kept = read_state_dict(result.checkpoint), read_state_dict(tmp_path / "run" / "checkpoints" /
                                                                       "best.safetensors")
    assert final.keys() == kept.keys() and all(torch.equal(final[k], kept[k]) for k in final)
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["stop_reason"] == result.stop_reason and last["recipe"].startswith("data-sized recipe")
    recorded = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert recorded["epochs"] == result.config.epochs and recorded["dropout"] == result.config.dropout  # resolved


def test_data_recipe_runs_without_tuning_flags_and_is_deterministic(tmp_path):
    from lib_clipcap.train.clipcap import train_clipcap

    torch.set_num_threads(1)
    fs = toy_features(80, views=2)
    r = train_clipcap(_cfg(**{**TINY, "out": str(tmp_path / "a")}), features=fs)
    assert r.config.val_images == 16 and r.best_step is not None and r.stop_reason  # 80 // 5 held out
    assert r.best_value > 1.0  # the toy captions are learned (CIDEr of greedy captions on held-out images)
    # The same settings again, interrupted after two validations: the same batches, views and values.
    cut = 2 * r.config.eval_every
    again = train_clipcap(_cfg(**{**TINY, "out": str(tmp_path / "b")}), features=fs, stop_after=cut)
    assert again.stop_reason == f"interrupted at step {cut} (epoch {cut / r.steps_per_epoch:.1f}) of " \
                                f"{r.config.epochs * r.steps_per_epoch} (resume to continue)"
    strip = lambda h: [{k: v for k, v in x.items() if k not in ("seconds", "stop_reason", "recipe")}  # noqa: E731
                       for x in h if x["step"] <= cut]
    assert strip(again.history) == strip(r.history)


def test_training_views_draw_per_step_and_fall_back_to_plain():
    from lib_clipcap.train.clipcap import TrainingViews

    fs = toy_features(8, views=3)
    v = TrainingViews(fs, seed=0, enabled=True, device=torch.device("cpu"))
    idx = torch.arange(8).repeat(8)
    x1, x2 = v.batch(idx, 5), v.batch(idx, 6)
    assert torch.equal(x1, v.batch(idx, 5)) and not torch.equal(x1, x2)  # a function of the step
    choices = torch.cat([fs.features[:, None], fs.views], 1)
    for row, i in zip(x1, idx):
        assert any(torch.equal(row, c) for c in choices[i])
    assert torch.equal(TrainingViews(fs, seed=0, enabled=False, device=torch.device("cpu")).batch(idx, 5),
                       fs.features[idx])


# ------------------------------------------------------------------------------------------------ regularisation
def test_dropout_is_training_only_and_leaves_checkpoints_alone(tmp_path):
    from lib_clipcap.checkpoint import build_model, load_config, save_checkpoint

    old_config, old_sd = load_config(ASSETS / "shapes" / "clipcap.safetensors")  # the bundled (old) checkpoint
    model = build_model(old_config, old_sd).eval()
    torch.manual_seed(0)
    feats, tokens = torch.randn(3, model.config.prefix_size), torch.randint(0, 50, (3, 7))
    with torch.no_grad():
        before = model(tokens, feats)
        model.set_dropout(mapper=0.3, gpt=0.3)
        assert torch.equal(model(tokens, feats), before)  # eval mode: the same outputs, bit for bit
        model.train()
        assert not torch.allclose(model(tokens, feats), before)  # training mode: dropout is on
        model.set_dropout(mapper=0.0, gpt=0.0)
        assert torch.allclose(model(tokens, feats), before, atol=1e-6)
    model.set_dropout(mapper=0.3, gpt=0.3)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    config, sd = load_config(path)
    assert config.to_dict() == old_config.to_dict()
    assert sd.keys() == old_sd.keys()  # no new config field, no new state-dict key
    assert "dropout" not in json.dumps(config.to_dict())
    with pytest.raises(ValueError):
        model.set_dropout(mapper=1.0)


def test_adamw_groups_and_label_smoothing():
    from lib_clipcap.model import ClipCapConfig, ClipCapModel
    from lib_clipcap.gpt2 import GPT2Config
    from lib_clipcap.train.clipcap import caption_loss
    from lib_clipcap.train.loop import adamw_no_decay_on_vectors

    torch.manual_seed(0)
    model = ClipCapModel(ClipCapConfig(prefix_length=2, prefix_size=8, mlp_hidden=(16,), gpt2=GPT2Config(
        vocab_size=30, n_positions=16, n_embd=16, n_layer=1, n_head=2, eos_token_id=0)))
    opt = adamw_no_decay_on_vectors(model.named_parameters(), lr=1e-3, weight_decay=0.1)
    decay, keep = opt.param_groups
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in keep["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in keep["params"]} >= {"gpt.transformer.ln_f.weight", "clip_project.model.0.bias"}
    tokens = torch.randint(1, 30, (4, 5))
    feats = torch.randn(4, 8)
    plain, smooth = (caption_loss(model.eval(), tokens, tokens, feats, label_smoothing=s) for s in (0.0, 0.1))
    assert smooth != plain


# ------------------------------------------------------------------------------------------- augmented shards
@pytest.fixture(scope="module")
def augmented_folders(tmp_path_factory, tiny_clip):
    from lib_clipcap.eval.datasets import load_dataset
    from lib_clipcap.eval.shapes_data import write_shapes_dataset
    from lib_clipcap.train.features import extract_features

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("aug")
    ds = load_dataset(write_shapes_dataset(root / "w", train=10, test=6), split="all", test_images=6)
    kw = dict(clip=tiny_clip, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS, batch_size=8, workers=0,
              shard_size=8, progress=False)
    return extract_features(ds, root / "plain", **kw), extract_features(ds, root / "aug", augment=["flip", "crops"],
                                                                         **kw)


def _version1_reader(folder):
    """What lib_clipcap's version-1 load_features did: every shard's "features" and "valid", nothing else."""
    from safetensors.torch import load_file

    meta = json.loads((folder / "features.json").read_text())
    shards = [load_file(str(folder / sh["file"])) for sh in meta["shards"]]
    return torch.cat([t["features"] for t in shards]), torch.cat([t["valid"] for t in shards])


def test_augmented_shards_read_back(augmented_folders):
    from lib_clipcap.train.features import load_features

    plain_dir, aug_dir = augmented_folders
    plain, aug = load_features(plain_dir), load_features(aug_dir)
    assert plain.meta["version"] == 1 and plain.views is None
    assert aug.meta["version"] == 2 and aug.meta["views"] == ["flip", "crop-tl", "crop-tr", "crop-bl", "crop-br",
                                                              "crop-center"]
    assert aug.views.shape == (16, 6, plain.dim) and len(list(aug_dir.glob("features-*.safetensors"))) == 2
    assert torch.allclose(aug.features, plain.features, atol=1e-5)  # the plain encoding is unchanged
    assert not torch.allclose(aug.views[:, 0], aug.features, atol=1e-3)  # a flip is another encoding
    test = aug.select("test")
    assert test.views.shape[0] == 6 and torch.equal(test.views, aug.views[-6:])  # views follow select()


def test_version1_reader_reads_augmented_shards_and_too_new_is_refused(augmented_folders, tmp_path):
    import shutil

    from lib_clipcap.train.features import load_features

    plain_dir, aug_dir = augmented_folders
    old_feats, old_valid = _version1_reader(aug_dir)
    assert torch.allclose(old_feats, load_features(plain_dir).features, atol=1e-5) and bool(old_valid.all())
    newer = shutil.copytree(aug_dir, tmp_path / "newer")
    meta = json.loads((newer / "features.json").read_text())
    (newer / "features.json").write_text(json.dumps({**meta, "version": 3}))
    with pytest.raises(ClipCapError, match="version 3.*reads versions 1 to 2"):
        load_features(newer)
    with pytest.raises(ClipCapError, match="unknown augmentation 'rotate'"):
        from lib_clipcap.train.features import augmentation_names

        augmentation_names(["rotate"])
