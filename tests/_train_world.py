"""Shared set-up of the training tests: a small shapes-world dataset on disk and its tiny-CLIP features."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "lib_clipcap" / "assets"
CLIP_MODEL = str(ASSETS / "clip_configs" / "shapes-tiny.json")
CLIP_WEIGHTS = str(ASSETS / "shapes" / "clip.safetensors")
TOKENIZER = str(ASSETS / "shapes" / "tokenizer.json")
TRAIN, TEST = 400, 100


def make_world(folder: Path, clip):
    """Write TRAIN + TEST shapes images (Flickr layout, test = last TEST) and extract their features."""
    from lib_clipcap.eval.datasets import load_dataset
    from lib_clipcap.eval.shapes_data import write_shapes_dataset
    from lib_clipcap.train.features import extract_features, load_features

    captions = write_shapes_dataset(folder, train=TRAIN, test=TEST)
    ds = load_dataset(captions, split="all", test_images=TEST)
    extract_features(ds, folder / "features", clip=clip, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS,
                     batch_size=100, workers=0, shard_size=200, progress=False)
    return folder / "features", load_features(folder / "features")


def one_thread_world(tmp_path_factory, clip):
    """:func:`make_world` in a new temporary folder, for a module-scoped ``world`` fixture. Sets torch to one thread
    first, and leaves it there: the machine is shared, and the tiny models do not gain from threads."""
    import torch

    torch.set_num_threads(1)
    return make_world(tmp_path_factory.mktemp("shapes"), clip)


def bleu(candidates: list[str], references: list[list[str]]) -> list[float]:
    """pycocoevalcap BLEU-1..4 on simply tokenised text (no Java needed)."""
    from lib_clipcap.eval.metrics import compute_metrics

    ids = [str(i) for i in range(len(candidates))]
    r = compute_metrics(dict(zip(ids, references)), dict(zip(ids, candidates)), metrics=("bleu",),
                        tokenizer="simple")
    return [r.scores[f"BLEU-{n}"] for n in range(1, 5)]


def tiny_clipcap_config(features: Path, out: Path, **kw):
    from lib_clipcap.train.clipcap import ClipCapTrainConfig

    base = dict(features=str(features), out=str(out), gpt2="scratch", gpt2_layers=2, gpt2_width=64, gpt2_heads=2,
                gpt2_positions=64, prefix_length=4, tokenizer=TOKENIZER, batch_size=32, lr=3e-3, warmup_steps=10,
                max_steps=100, save_every=0, progress=False, log_every=20, max_tokens=24, device="cpu")
    base.update(kw)
    return ClipCapTrainConfig(**base)


def caption_texts(model, tokenizer, clip, features, **opts) -> list[str]:
    from lib_clipcap.captioner import Captioner

    cap = Captioner(clip, model, tokenizer)
    opts = {"decoding": "greedy", "max_new_tokens": 24, **opts}
    return [r.text for r in cap.caption_features(features, cap.decoding_options(**opts))]
