"""Training beats copying: the recipe `train clipcap` fills for a GPT-2 trained from scratch (sized to the data, no
tuning flags), trained on a draw of the relations world it was never tuned on, beats both retrieval baselines on
held-out images (CIDEr; BLEU-4 within 2% of the nearest neighbour, see the test), with two seeds (a seed that happens
to work cannot make this pass)."""

from __future__ import annotations

import pytest
import torch
from _train_world import CLIP_MODEL, CLIP_WEIGHTS

TRAIN, TEST = 2000, 300
# World seed 0 is the draw the earlier fixed recipe was developed on, 3 the one the regularisation defaults were
# measured on (lib_clipcap.train.recipe), 1 and 2 tools/bench_train.py's: this one is none of them.
WORLD_SEED = 4


@pytest.fixture(scope="module")
def hard_world(tmp_path_factory, tiny_clip):
    from lib_clipcap.eval.datasets import load_dataset
    from lib_clipcap.train.features import extract_features, load_features
    from lib_clipcap.train.worlds import write_world

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("relations")
    captions = write_world(folder, train=TRAIN, test=TEST, world_seed=WORLD_SEED)
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
def test_recipe_beats_both_retrieval_baselines(hard_world, seed, tmp_path):
    from lib_clipcap.captioner import Captioner
    from lib_clipcap.eval.baselines import retrieve_captions
    from lib_clipcap.train.clipcap import ClipCapTrainConfig, train_clipcap
    from lib_clipcap.train.worlds import RECIPE

    fs = hard_world
    train, test = fs.select("train"), fs.select("test")
    baselines = {m: _scores([p.caption for p in retrieve_captions(train.features, train.captions, test.features,
                                                                  method=m)], test.captions)
                 for m in ("nearest", "consensus")}
    cfg = ClipCapTrainConfig(features="-", out=str(tmp_path / "run"), seed=seed, device="cpu", progress=False,
                             **RECIPE)
    result = train_clipcap(cfg, features=fs)
    assert result.config.val_images == 200 and result.config.epochs == 45  # sized to 2000 images, not given
    cap = Captioner.from_checkpoint(result.checkpoint, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS,
                                    device="cpu")
    opts = cap.decoding_options(decoding="greedy", num_candidates=1, max_new_tokens=40)
    trained = _scores([r.text for r in cap.caption_features(test.features, opts)], test.captions)
    why = (seed, trained, baselines, result.stop_reason)
    for name, base in baselines.items():
        assert trained[1] > base[1], why  # CIDEr: above both (measured here: +3% / +6% over nearest)
    assert trained[0] > baselines["consensus"][0], why  # measured: +11% / +12%
    # BLEU-4 against the nearest neighbour: measured +0.6% / +1.3% on this draw (Intel Xeon, one thread), within
    # what another CPU's rounding can move. Until issue 24's +10% target is met the test holds the recipe to "not
    # more than 2% below" there, so that a float difference between machines cannot flip it.
    assert trained[0] >= 0.98 * baselines["nearest"][0], why


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
