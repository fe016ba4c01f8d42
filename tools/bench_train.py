"""Does training beat copying? The ClipCap training recipe against the retrieval baselines on synthetic worlds, and
the training speed with GPT-2's vocabulary against a custom one sized to the captions.

    .venv/bin/python tools/bench_train.py                              # all worlds, seeds 0 and 1 (~35 min, 2 cores)
    .venv/bin/python tools/bench_train.py --worlds relations --seeds 0 --json out.json

Per world (Flickr8k layout, the bundled tiny CLIP, the last --test images = test): CLIP features once, the nearest
and consensus baselines from the training split's features, then the recipe (``lib_clipcap.train.worlds.RECIPE``,
the README's commands) trained with each seed; test captions are greedy (eval's default), scored by pycocoevalcap
(PTB tokenizer when Java is present).
"exact" is the share of test captions identical to one of the image's references (every attribute right).

Worlds: ``shapes`` (the bundled shapes world, the README's "easy" one), ``relations`` (:mod:`lib_clipcap.train.worlds`:
other shapes, colours, sizes, counts, two-object relations, five paraphrases) and ``relations-combo`` (the same
world, test images showing colour/shape pairs never seen in training).

Speed: training steps/s of the recipe's model with GPT-2's 50257-token vocabulary and with the custom tokenizer
(same model otherwise, same batches), medians of --speed-repeats runs of --speed-steps steps, and the share of a
step spent in the output layer + loss (forward and backward of ``lm_head`` and cross-entropy, timed alone).
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from pathlib import Path

import _bench_common as common
import torch

from lib_clipcap.eval.baselines import DEFAULT_K
from lib_clipcap.train.worlds import RECIPE

ASSETS = common.ROOT / "lib_clipcap" / "assets"
CLIP_MODEL = str(ASSETS / "clip_configs" / "shapes-tiny.json")
CLIP_WEIGHTS = str(ASSETS / "shapes" / "clip.safetensors")
WORLDS = ("shapes", "relations", "relations-combo")

def make_world(name: str, folder: Path, train: int, test: int) -> Path:
    """Write world ``name`` into ``folder``; returns its captions.txt."""
    if name == "shapes":
        from lib_clipcap.eval.shapes_data import write_shapes_dataset

        return write_shapes_dataset(folder, train=train, test=test)
    from lib_clipcap.train.worlds import write_world

    return write_world(folder, train=train, test=test, split="combo" if name.endswith("combo") else "iid")


def features(captions: Path, out: Path, test: int, clip):
    from lib_clipcap.eval.datasets import load_dataset
    from lib_clipcap.train.features import extract_features, load_features

    ds = load_dataset(captions, split="all", test_images=test)
    extract_features(ds, out, clip=clip, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS, batch_size=128,
                     workers=0, progress=False)
    return load_features(out)


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def score(captions: list[str], references: list[list[str]], tokenizer: str) -> dict[str, float]:
    from lib_clipcap.eval.metrics import compute_metrics

    ids = [str(i) for i in range(len(captions))]
    r = compute_metrics(dict(zip(ids, references)), dict(zip(ids, captions)), metrics=("bleu", "cider"),
                        tokenizer=tokenizer)
    exact = sum(_words(c) in {_words(x) for x in refs} for c, refs in zip(captions, references)) / len(captions)
    return {"BLEU-4": r.scores["BLEU-4"], "CIDEr": r.scores["CIDEr"], "exact": exact}


def train_recipe(fs, out: Path, seed: int, overrides: dict) -> tuple[list[str], dict]:
    from lib_clipcap.captioner import Captioner
    from lib_clipcap.train.clipcap import ClipCapTrainConfig, train_clipcap

    cfg = ClipCapTrainConfig(features=str(out / "none"), out=str(out), seed=seed, device="cpu", progress=False,
                             **{**RECIPE, **overrides})
    t0 = time.perf_counter()
    res = train_clipcap(cfg, features=fs)
    seconds = time.perf_counter() - t0
    cap = Captioner.from_checkpoint(res.checkpoint, clip_model=CLIP_MODEL, clip_pretrained=CLIP_WEIGHTS,
                                    device="cpu")
    test = fs.select("test")
    opts = cap.decoding_options(decoding="greedy", num_candidates=1, max_new_tokens=40)  # eval's default decoding
    texts = [r.text for r in cap.caption_features(test.features, opts)]
    info = {"steps": res.steps, "best_step": res.best_step, "stopped_early": res.stopped_early,
            "train_s": round(seconds, 1), "vocab": cap.tokenizer.vocab_size}
    return texts, info


def speed(fs, out: Path, steps: int, repeats: int) -> dict:
    """Steps/s with GPT-2's vocabulary vs the custom tokenizer, and the output layer's share of a GPT-2-vocab step."""
    import torch.nn.functional as F

    from lib_clipcap.train.clipcap import ClipCapTrainConfig, train_clipcap

    res: dict = {}
    for name, tok in (("gpt2 (50257 tokens)", "gpt2"), ("custom (sized to the captions)", "custom")):
        rates = []
        for r in range(repeats):
            kw = {**RECIPE, "tokenizer": tok, "max_steps": steps, "warmup_steps": 10, "val_images": 0,
                  "patience": 0, "log_every": steps}
            cfg = ClipCapTrainConfig(features="-", out=str(out / f"speed-{tok}-{r}"), device="cpu", progress=False,
                                     **kw)
            t0 = time.perf_counter()
            train_clipcap(cfg, features=fs)
            rates.append(steps / (time.perf_counter() - t0))
        res[name] = statistics.median(rates)
    # The output layer alone, GPT-2 vocabulary, the recipe's batch: 64 captions of ~20 tokens + the prefix.
    b, t, d, v = RECIPE["batch_size"], 24, RECIPE["gpt2_width"], 50257
    h = torch.randn(b, t, d, requires_grad=True)
    w = torch.randn(v, d, requires_grad=True)
    labels = torch.randint(0, v, (b * t,))
    times = []
    for _ in range(max(3, repeats)):
        t0 = time.perf_counter()
        F.cross_entropy((h @ w.T).reshape(-1, v), labels).backward()
        times.append(time.perf_counter() - t0)
    head = statistics.median(times)
    res["gpt2 output layer + loss, s/step"] = head
    res["gpt2 output layer share of a step"] = head * res["gpt2 (50257 tokens)"]
    return res


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=WORLDS)
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-train"))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a run repeats exactly)")
    ap.add_argument("--speed-steps", type=int, default=20, help="steps per speed run (0: skip the speed part)")
    ap.add_argument("--speed-repeats", type=int, default=3)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="override recipe settings")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    from lib_clipcap.clip import ClipBackbone
    from lib_clipcap.eval.baselines import retrieval_inputs, retrieve_captions
    from lib_clipcap.eval.datasets import load_dataset
    from lib_clipcap.eval.metrics import java_path

    tokenizer = "ptb" if java_path() else "simple"
    clip = ClipBackbone.load(CLIP_MODEL, CLIP_WEIGHTS)
    report: dict = {"hardware": common.hardware(torch.device("cpu")), "threads": args.threads, "recipe":
                    {**RECIPE, **overrides}, "metric_tokenizer": tokenizer, "worlds": {}}
    rows = []
    for world in args.worlds:
        folder = args.out / world
        captions = make_world(world, folder / "data", args.train, args.test)
        fs = features(captions, folder / "features", args.test, clip)
        test = load_dataset(captions, split="test", test_images=args.test)
        inputs = retrieval_inputs(test, features=fs)
        refs = [it.references for it in test.items]
        w: dict = {}
        for method in ("nearest", "consensus"):
            picks = retrieve_captions(inputs.train_features, inputs.train_captions, inputs.query_features,
                                      method=method, k=DEFAULT_K)
            w[method] = score([p.caption for p in picks], refs, tokenizer)
            rows.append((world, f"baseline: {method}", w[method], ""))
        for seed in args.seeds:
            texts, info = train_recipe(fs, folder / f"recipe-seed{seed}", seed, overrides)
            s = {**score(texts, refs, tokenizer), **info}
            w[f"recipe seed {seed}"] = s
            rows.append((world, f"recipe, seed {seed}", s, f"{info['steps']} steps, best {info['best_step']}, "
                                                           f"{info['train_s']:.0f} s"))
            print(world, seed, json.dumps(s), file=sys.stderr, flush=True)
        report["worlds"][world] = w
    if args.speed_steps and args.worlds:
        report["speed"] = speed(fs, args.out / "speed", args.speed_steps, args.speed_repeats)
    print(f"hardware: {report['hardware']}, {args.threads} torch thread(s), fp32; metrics: {tokenizer} tokenizer")
    print("| world | captions | BLEU-4 | CIDEr | exact | vs consensus (BLEU-4 / CIDEr) | run |")
    print("|---|---|---|---|---|---|---|")
    for world, name, s, note in rows:
        c = report["worlds"][world]["consensus"]
        rel = "" if name.startswith("baseline") else (f"{100 * (s['BLEU-4'] / c['BLEU-4'] - 1):+.0f}% / "
                                                      f"{100 * (s['CIDEr'] / c['CIDEr'] - 1):+.0f}%")
        print(f"| {world} | {name} | {s['BLEU-4']:.3f} | {s['CIDEr']:.3f} | {s['exact']:.2f} | {rel} | {note} |")
    if "speed" in report:
        sp = report["speed"]
        a, b = sp["gpt2 (50257 tokens)"], sp["custom (sized to the captions)"]
        print(f"\nsteps/s: GPT-2 vocabulary {a:.2f}, custom tokenizer {b:.2f} ({b / a:.1f}x); output layer + loss "
              f"alone with GPT-2's vocabulary: {sp['gpt2 output layer + loss, s/step']:.3f} s "
              f"({100 * sp['gpt2 output layer share of a step']:.0f}% of a step)")
    if args.json:
        common.write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
