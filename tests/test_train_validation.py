"""Validation during ClipCap training: the held-out split, the logged validation values, best-checkpoint selection,
early stopping and the learning-rate schedules."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _train_world import make_world, tiny_clipcap_config

from lib_clipcap.errors import ClipCapError
from lib_clipcap.train.loop import schedule_lambda
from lib_clipcap.train.validation import BestTracker, split_off_validation


def test_tracker_keeps_the_best_and_stops_after_patience():
    t = BestTracker.for_metric("cider", patience=2)
    seen = [t.update(s, {"val_CIDEr": v}) for s, v in [(10, 1.0), (20, 1.5), (30, 1.4), (40, 1.5), (50, 1.6)]]
    assert seen == [True, True, False, False, True]  # equal is not better
    assert (t.best, t.best_step, t.should_stop) == (1.6, 50, False)
    t.update(60, {"val_CIDEr": 0.1})
    assert not t.should_stop
    t.update(70, {"val_CIDEr": 1.59})
    assert t.should_stop and t.best_step == 50
    again = BestTracker.for_metric("cider", patience=2)
    again.load_state_dict(t.state_dict())
    assert again.should_stop and again.best == 1.6


def test_tracker_on_loss_prefers_lower_and_never_stops_without_patience():
    t = BestTracker.for_metric("loss")
    assert t.update(1, {"val_loss": 2.0}) and t.update(2, {"val_loss": 1.0}) and not t.update(3, {"val_loss": 1.5})
    for s in range(4, 50):
        t.update(s, {"val_loss": 9.0})
    assert t.best_step == 2 and not t.should_stop
    with pytest.raises(ClipCapError, match="val_loss"):
        t.update(60, {"val_CIDEr": 1.0})
    with pytest.raises(ClipCapError, match="'rouge'"):
        BestTracker.for_metric("rouge")


def test_schedules():
    lin, cos, const = (schedule_lambda(k, 10, 110) for k in ("linear", "cosine", "constant"))
    assert lin(0) == cos(0) == const(0) == pytest.approx(0.1)
    assert lin(9) == cos(9) == const(9) == 1.0
    assert lin(60) == pytest.approx(0.5) and cos(60) == pytest.approx(0.5)
    assert cos(35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25))) and cos(35) > lin(35)
    assert lin(110) == cos(110) == 0.0 and const(110) == 1.0
    with pytest.raises(ValueError, match="'step'"):
        schedule_lambda("step", 1, 2)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_clip):
    torch.set_num_threads(1)
    return make_world(tmp_path_factory.mktemp("val"), tiny_clip)


def test_split_off_validation_holds_out_the_last_images(world):
    _, fs = world
    train = fs.select("train")
    a, b = split_off_validation(train, 50)
    assert len(a) == 350 and len(b) == 50 and b.image_ids == train.image_ids[-50:]
    assert torch.equal(b.features, train.features[-50:]) and not set(a.image_ids) & set(b.image_ids)
    assert split_off_validation(train, 0) == (train, None)
    with pytest.raises(ClipCapError, match="val_images=400"):
        split_off_validation(train, 400)


@pytest.mark.slow
def test_validation_is_logged_and_the_best_checkpoint_is_the_final_model(world, tmp_path):
    from lib_clipcap.checkpoint import read_state_dict
    from lib_clipcap.train.clipcap import train_clipcap

    feats, fs = world
    cfg = tiny_clipcap_config(feats, tmp_path / "run", max_steps=100, val_images=50, eval_every=20,
                              val_caption_images=30, log_every=50)
    result = train_clipcap(cfg, features=fs)
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in log if "val_CIDEr" in r]
    assert [r["step"] for r in val] == [20, 40, 60, 80, 100]
    assert all({"val_loss", "val_BLEU-4", "val_CIDEr", "best_step"} <= set(r) for r in val)
    assert val[-1]["val_CIDEr"] > val[0]["val_CIDEr"] and val[-1]["val_loss"] < val[0]["val_loss"]
    best = max(val, key=lambda r: (r["val_CIDEr"], -r["step"]))
    assert result.best_step == best["step"] and result.best_value == pytest.approx(best["val_CIDEr"])
    final = read_state_dict(result.checkpoint)
    kept = read_state_dict(tmp_path / "run" / "checkpoints" / "best.safetensors")
    assert final.keys() == kept.keys() and all(torch.equal(final[k], kept[k]) for k in final)


@pytest.mark.slow
def test_early_stopping_when_validation_stops_improving(world, tmp_path):
    from lib_clipcap.train.clipcap import train_clipcap

    feats, fs = world
    # A learning rate too small to change any caption: the metric never improves after the first validation.
    cfg = tiny_clipcap_config(feats, tmp_path / "run", max_steps=200, lr=1e-9, val_images=50, eval_every=10,
                              val_caption_images=20, patience=2, select_by="bleu4")
    result = train_clipcap(cfg, features=fs)
    assert result.stopped_early and result.steps == 30 and result.best_step == 10
    assert result.checkpoint.name == "clipcap.safetensors" and result.checkpoint.is_file()
