"""Caption-review scoring benchmark: pairs/s of ``ReviewScorer`` (cold, and re-scan after edits) against a loop that
calls ``lib_clipcap.scoring`` once per pair, measured in the same run.

Real-size CLIP with random weights (the compute is that of the trained model): open_clip ViT-B-32 (or ``--clip
ViT-L-14``, the Flickr models' CLIP) plus a grammar head (random weights, the real head's shape) on CLIP's text tower.
A folder of photo-like 512x512 JPEGs with a sidecar caption each is scored three ways, every time CLIP-S and
P(grammatical) for every (image, caption) pair, from JPEG files on disk:

* **per pair**: for each pair, ``scoring.clip_score(clip, [path], [caption])`` and the grammar head on that caption:
  what a script that scores file by file with the library does (on ``--pair-images`` images);
* **review, cold**: :class:`lib_clipcap.review.ReviewScorer` on a fresh folder: images decoded ahead of the model,
  encoded in batches, features written to the on-disk cache;
* **review, re-scan**: the same folder scanned again after editing ``--edit-share`` of the captions, by a new scorer
  (as in a new session): image features come from the on-disk cache; every caption's text is encoded again (the text
  memo lives in memory only), which costs little next to images.

    python tools/bench_review.py                                    # CPU fp32
    python tools/bench_review.py --device cuda --dtype fp16 --clip ViT-L-14 --images 10000 --batch-size 256

Prints a Markdown table (medians over ``--repeats``) and writes JSON to artifacts/bench_review.json.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _bench_common as common  # first: puts the repository on sys.path
from bench_batch import make_jpegs

ROOT = common.ROOT
WORDS = ("a", "dog", "red", "car", "on", "the", "street", "two", "people", "walking", "beach", "sunset", "with",
         "large", "small", "green", "field", "house", "near", "water")


def write_captions(paths: list[Path], seed: int = 0) -> None:
    import random

    rng = random.Random(seed)
    for p in paths:
        p.with_suffix(".txt").write_text(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + ".",
                                         encoding="utf-8")


def build_models(clip_name: str, device, dtype):
    import torch

    from lib_clipcap.clip import ClipBackbone
    from lib_clipcap.grammar import GrammarConfig, GrammarHead, GrammarScorer

    torch.manual_seed(0)
    clip = ClipBackbone.load(clip_name, None, device=device, dtype=dtype)
    dim = clip.embed_dim
    head = GrammarHead(dim, dim).to(device)
    grammar = GrammarScorer(head, clip, GrammarConfig(clip_model=clip.name, clip_pretrained=None, embed_dim=dim,
                                                      hidden=dim))
    return clip, grammar


def main() -> None:
    ap = common.parser(__doc__, clip_help=common.CLIP_HELP)
    ap.add_argument("--images", type=int, default=48, help="pairs scored by the review scorer")
    ap.add_argument("--pair-images", type=int, default=12, help="pairs scored by the per-pair loop")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, help="default: 32 on CPU, 256 on GPU")
    ap.add_argument("--workers", type=int, help="decoding processes (default: batch tagging's choice)")
    ap.add_argument("--edit-share", type=float, default=0.05, help="share of captions edited before the re-scan")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench_review.json")
    args = ap.parse_args()
    device, dtype = common.device_and_dtype(args)
    batch = args.batch_size or (32 if device.type == "cpu" else 256)

    from lib_clipcap import scoring
    from lib_clipcap.review import ReviewScorer, scan_folder

    clip, grammar = build_models(args.clip, device, dtype)
    work = Path(tempfile.mkdtemp(prefix="bench_review_"))
    try:
        paths = make_jpegs(work / "set", args.images, args.size)
        write_captions(paths)
        pair_paths = paths[:args.pair_images]
        captions = {p: p.with_suffix(".txt").read_text(encoding="utf-8") for p in paths}

        def per_pair() -> float:
            t0 = time.perf_counter()
            for p in pair_paths:
                scoring.clip_score(clip, [str(p)], [captions[p]])
                grammar.probability([captions[p]])
            common.sync(device)
            return len(pair_paths) / (time.perf_counter() - t0)

        def cold() -> float:
            shutil.rmtree(work / "set" / ".clipcap-review-cache", ignore_errors=True)
            table = scan_folder(work / "set")  # scanning (pairing, flags) is part of what a user waits for
            t0 = time.perf_counter()
            ReviewScorer(clip, grammar, batch_size=batch, workers=args.workers).score(table)
            common.sync(device)
            return len(table.rows) / (time.perf_counter() - t0)

        def rescan() -> float:
            import random

            rng = random.Random(len(paths))
            for p in rng.sample(paths, max(1, int(len(paths) * args.edit_share))):
                p.with_suffix(".txt").write_text(captions[p] + " edited", encoding="utf-8")
            table = scan_folder(work / "set")
            t0 = time.perf_counter()
            scorer = ReviewScorer(clip, grammar, batch_size=batch, workers=args.workers)
            scorer.score(table)
            common.sync(device)
            assert scorer.stats["images_encoded"] == 0, scorer.stats
            return len(table.rows) / (time.perf_counter() - t0)

        per_pair()  # warm-up (first calls allocate)
        results = {"per pair (scoring.clip_score + grammar, one pair at a time)": [],
                   "review, cold (batched, cache written)": [], "review, re-scan after edits (cached images)": []}
        for _ in range(args.repeats):
            results["per pair (scoring.clip_score + grammar, one pair at a time)"].append(per_pair())
            results["review, cold (batched, cache written)"].append(cold())
            results["review, re-scan after edits (cached images)"].append(rescan())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in results.items()}
    base = medians["per pair (scoring.clip_score + grammar, one pair at a time)"]
    result = {"hardware": common.hardware(device), "device": args.device, "dtype": args.dtype, "clip": args.clip,
              "images": args.images, "pair_images": args.pair_images, "batch_size": batch, "repeats": args.repeats,
              "pairs_per_s": results, "median_pairs_per_s": medians}
    common.write_json(args.out, result)
    common.print_table(f"{result['hardware']}; {args.clip} (random weights) + grammar head, {args.dtype}, "
                       f"{args.size}x{args.size} JPEGs, batch {batch}, medians of {args.repeats}",
                       ["scoring", "pairs/s", "vs per pair"],
                       [[k, f"{v:.2f}", f"{v / base:.1f}x"] for k, v in medians.items()])
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
