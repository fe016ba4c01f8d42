"""Does training beat copying, at every size? The data-sized ClipCap recipe against both retrieval baselines on draws of
the relations world (:mod:`lib_clipcap.train.worlds`) of several sizes, with the time of each training run.

    .venv/bin/python tools/bench_train.py --sizes 1000 2000 --world-seeds 1 --seeds 0 1 --json out.json
    .venv/bin/python tools/bench_train.py                       # 1000..10000 images, world seeds 1-2, seeds 0-1
    .venv/bin/python tools/bench_train.py --sizes 1000 --world-seeds 2 --seeds 0 \\
        --variant none='{"dropout":0,"mapper_dropout":0,"label_smoothing":0,"weight_decay":0}' --variant default='{}'

Per (size, world seed): the world with ``size`` training-split images (the recipe holds its validation images out
of these) and ``--test`` test images, written in Flickr8k's layout, CLIP features from the bundled tiny CLIP (with
``--augment crops``: the five crops' encodings too), the nearest and consensus baselines retrieving from the whole
training split, then each variant (default: the recipe as `train clipcap` fills it, :data:`RECIPE`) trained with
each ``--seeds`` seed. Test captions are greedy (eval's default), scored by pycocoevalcap (PTB tokenizer when Java
is present, else the simple one). "exact" is the share of test captions identical to one of the image's references.
World seed 0 is the draw the earlier fixed recipe was developed on; the defaults leave it out.

``--variant NAME=JSON`` (repeatable) trains settings on top of the recipe; ``--recipe fixed6000`` uses the earlier
README recipe (:data:`~lib_clipcap.train.worlds.RECIPE_FIXED_6000`) instead, for comparison.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import _bench_common as common
import torch

from lib_clipcap.eval.baselines import DEFAULT_K
from lib_clipcap.train.worlds import RECIPE, RECIPE_FIXED_6000

ASSETS = common.ROOT / "lib_clipcap" / "assets"
CLIP_MODEL = str(ASSETS / "clip_configs" / "shapes-tiny.json")
CLIP_WEIGHTS = str(ASSETS / "shapes" / "clip.safetensors")
RECIPES = {"data": RECIPE, "fixed6000": RECIPE_FIXED_6000}


def world_features(folder: Path, size: int, test: int, world_seed: int, clip, augment: list[str]):
    """Write the world and its features (reused when already there); returns ``(features, test dataset)``."""
    from lib_clipcap.eval.datasets import load_dataset
    from lib_clipcap.train.features import extract_features, load_features
    from lib_clipcap.train.worlds import write_world

    captions = write_world(folder / "data", train=size, test=test, world_seed=world_seed)
    ds = load_dataset(captions, split="all", test_images=test)
    name = "features" + ("-" + "-".join(augment) if augment else "")
    extract_features(ds, folder / name, clip=clip, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS,
                     batch_size=128, workers=0, progress=False, augment=augment)
    return load_features(folder / name), load_dataset(captions, split="test", test_images=test)


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def score(captions: list[str], references: list[list[str]], tokenizer: str) -> dict[str, float]:
    """BLEU-4, CIDEr and the exact-match share of captions against references."""
    from lib_clipcap.eval.metrics import compute_metrics

    ids = [str(i) for i in range(len(captions))]
    r = compute_metrics(dict(zip(ids, references)), dict(zip(ids, captions)), metrics=("bleu", "cider"),
                        tokenizer=tokenizer)
    exact = sum(_words(c) in {_words(x) for x in refs} for c, refs in zip(captions, references)) / len(captions)
    return {"BLEU-4": r.scores["BLEU-4"], "CIDEr": r.scores["CIDEr"], "exact": exact}


def train_and_caption(fs, out: Path, seed: int, settings: dict) -> tuple[list[str], dict]:
    """Train ``settings`` with ``seed`` and caption the test split greedily; returns ``(captions, run info)``."""
    from lib_clipcap.captioner import Captioner
    from lib_clipcap.train.clipcap import ClipCapTrainConfig, train_clipcap

    cfg = ClipCapTrainConfig(features=str(out / "none"), out=str(out), seed=seed, device="cpu", progress=False,
                             **settings)
    t0 = time.perf_counter()
    res = train_clipcap(cfg, features=fs)
    seconds = time.perf_counter() - t0
    cap = Captioner.from_checkpoint(res.checkpoint, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS,
                                    device="cpu")
    test = fs.select("test")
    opts = cap.decoding_options(decoding="greedy", num_candidates=1, max_new_tokens=40)  # eval's default decoding
    texts = [r.text for r in cap.caption_features(test.features, opts)]
    info = {"steps": res.steps, "epochs": round(res.steps / res.steps_per_epoch, 1), "best_step": res.best_step,
            "stopped_early": res.stopped_early, "stop_reason": res.stop_reason, "train_s": round(seconds, 1),
            "vocab": cap.tokenizer.vocab_size}
    return texts, info


def _rel(s: dict, base: dict) -> str:
    return f"{100 * (s['BLEU-4'] / base['BLEU-4'] - 1):+.1f}% / {100 * (s['CIDEr'] / base['CIDEr'] - 1):+.1f}%"


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000],
                    help="training-split images per world (validation is held out of these)")
    ap.add_argument("--world-seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--recipe", choices=list(RECIPES), default="data")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                    help="settings trained on top of the recipe (repeatable; default: the recipe alone)")
    ap.add_argument("--augment", nargs="*", default=[], help="store augmented views (e.g. crops) in the features")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-train"))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a run repeats exactly)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = {"recipe": {}} if not args.variant else {
        k: json.loads(v) for k, v in (s.split("=", 1) for s in args.variant)}
    from lib_clipcap.clip import ClipBackbone
    from lib_clipcap.eval.baselines import retrieval_inputs, retrieve_captions
    from lib_clipcap.eval.metrics import java_path

    tokenizer = "ptb" if java_path() else "simple"
    clip = ClipBackbone.load(CLIP_MODEL, CLIP_WEIGHTS)
    report: dict = {"hardware": common.hardware(torch.device("cpu")), "threads": args.threads,
                    "recipe": RECIPES[args.recipe], "variants": variants, "augment": args.augment,
                    "metric_tokenizer": tokenizer, "runs": []}
    for size in args.sizes:
        for ws in args.world_seeds:
            folder = args.out / f"world{ws}-{size}"
            fs, test = world_features(folder, size, args.test, ws, clip, args.augment)
            inputs = retrieval_inputs(test, features=fs)
            refs = [it.references for it in test.items]
            base: dict = {}
            for method in ("nearest", "consensus"):
                picks = retrieve_captions(inputs.train_features, inputs.train_captions, inputs.query_features,
                                          method=method, k=DEFAULT_K)
                base[method] = score([p.caption for p in picks], refs, tokenizer)
            better = {m: max(base["nearest"][m], base["consensus"][m]) for m in ("BLEU-4", "CIDEr")}
            row = {"size": size, "world_seed": ws, "baselines": base, "better_baseline": better, "trained": {}}
            for name, extra in variants.items():
                for seed in args.seeds:
                    texts, info = train_and_caption(fs, folder / f"{args.recipe}-{name}-seed{seed}", seed,
                                                    {**RECIPES[args.recipe], **extra})
                    s = {**score(texts, refs, tokenizer), **info}
                    row["trained"][f"{name} seed {seed}"] = s
                    print(size, ws, name, seed, json.dumps(s), file=sys.stderr, flush=True)
            report["runs"].append(row)
            if args.json:  # after every world, so that a long run that is cut short keeps what it measured
                common.write_json(args.json, report)
    print(f"hardware: {report['hardware']}, {args.threads} torch thread(s), fp32; metrics: {tokenizer} tokenizer; "
          f"recipe {args.recipe}" + (f", features augmented with {args.augment}" if args.augment else ""))
    print("| train images | world | captions | BLEU-4 | CIDEr | exact | vs better baseline (BLEU-4 / CIDEr) | run |")
    print("|---|---|---|---|---|---|---|---|")
    for row in report["runs"]:
        size, ws = row["size"], row["world_seed"]
        for method, s in row["baselines"].items():
            print(f"| {size} | {ws} | baseline: {method} | {s['BLEU-4']:.3f} | {s['CIDEr']:.3f} | {s['exact']:.2f} "
                  f"| | |")
        for name, s in row["trained"].items():
            note = (f"{s['steps']} steps ({s['epochs']} epochs), best {s['best_step']}, "
                    f"{'early stop' if s['stopped_early'] else 'full length'}, {s['train_s']:.0f} s")
            print(f"| {size} | {ws} | {name} | {s['BLEU-4']:.3f} | {s['CIDEr']:.3f} | {s['exact']:.2f} | "
                  f"{_rel(s, row['better_baseline'])} | {note} |")
    if args.json:
        common.write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
