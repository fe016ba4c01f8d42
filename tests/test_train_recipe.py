"""Training beats copying: the README's recipe, trained on a small hard world, beats the consensus retrieval baseline
on held-out images, with two seeds (a seed that happens to work cannot make this pass)."""

from __future__ import annotations

import pytest
import torch
from _train_world import CLIP_MODEL, CLIP_WEIGHTS

TRAIN, TEST = 1500, 200


@pytest.fixture(scope="module")
def hard_world(tmp_path_factory, tiny_clip):
    from lib_clipcap.eval.datasets import load_dataset
    from lib_clipcap.train.features import extract_features, load_features
    from lib_clipcap.train.worlds import write_world

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("relations")
    captions = write_world(folder, train=TRAIN, test=TEST)
    extract_features(load_dataset(captions, split="all", test_images=TEST), folder / "features", clip=tiny_clip,
                     clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS, batch_size=100, workers=0,
                     progress=False)
    return load_features(folder / "features")


def _scores(captions: list[str], references: list[list[str]]) -> tuple[float, float]:
    from lib_clipcap.eval.metrics import compute_metrics

    ids = [str(i) for i in range(len(captions))]
    r = compute_metrics(dict(zip(ids, references)), dict(zip(ids, captions)), metrics=("bleu", "cider"),
                        tokenizer="simple")
    return r.scores["BLEU-4"], r.scores["CIDEr"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_recipe_beats_the_consensus_baseline(hard_world, seed, tmp_path):
    from lib_clipcap.captioner import Captioner
    from lib_clipcap.eval.baselines import retrieve_captions
    from lib_clipcap.train.clipcap import ClipCapTrainConfig, train_clipcap
    from lib_clipcap.train.worlds import RECIPE

    fs = hard_world
    train, test = fs.select("train"), fs.select("test")
    picks = retrieve_captions(train.features, train.captions, test.features, method="consensus")
    baseline = _scores([p.caption for p in picks], test.captions)
    cfg = ClipCapTrainConfig(features="-", out=str(tmp_path / "run"), seed=seed, device="cpu", progress=False,
                             **{**RECIPE, "max_steps": 2500, "eval_every": 250, "val_images": 200,
                                "val_caption_images": 200})
    result = train_clipcap(cfg, features=fs)
    cap = Captioner.from_checkpoint(result.checkpoint, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS,
                                    device="cpu")
    opts = cap.decoding_options(decoding="greedy", num_candidates=1, max_new_tokens=40)
    trained = _scores([r.text for r in cap.caption_features(test.features, opts)], test.captions)
    assert trained[0] > baseline[0] and trained[1] > baseline[1], (seed, trained, baseline, result.best_step)


def test_training_features_and_inference_features_give_the_same_captions(demo_captioner, tmp_path):
    """The features a model is trained on (a `train features` folder: raw CLIP outputs) and the features inference
    computes from the image files must meet the mapper normalised the same way, or a trained model is evaluated on
    inputs it never saw."""
    from lib_clipcap.eval.datasets import load_dataset
    from lib_clipcap.eval.shapes_data import write_shapes_dataset
    from lib_clipcap.train.features import extract_features, load_features

    captions = write_shapes_dataset(tmp_path / "w", train=20, test=12)
    ds = load_dataset(captions, split="test", test_images=12)
    cap = demo_captioner
    extract_features(ds, tmp_path / "f", clip=cap.clip, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS,
                     batch_size=6, workers=0, progress=False)
    fs = load_features(tmp_path / "f")
    assert fs.meta["normalized"] is False and cap.model.config.normalize
    opts = cap.decoding_options(decoding="greedy", num_candidates=1, max_new_tokens=24)
    from_folder = [r.text for r in cap.caption_features(fs.features, opts)]
    from_images = [r.text for r in cap.caption([str(it.path) for it in ds.items], decoding="greedy",
                                               num_candidates=1, max_new_tokens=24)]
    assert from_folder == from_images
    assert sum(t.rstrip(".") in {r.rstrip(".") for r in it.references} for t, it in zip(from_images, ds.items)) >= 9
