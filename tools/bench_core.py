"""Core captioning benchmark: our batched KV-cached decoder vs the original per-image uncached loop, same run.

Real-size architecture with random weights (the compute is the same as with trained ones): open_clip ViT-B-32 and
ClipCap's MLP mapper (prefix 10) on GPT-2 small. The original loop runs on the original's layers (Hugging Face's
Conv1D layout: devtools.reference.with_original_layers), same weights. Every caption is exactly ``--tokens`` tokens long (no stop token), so
both sides do identical work. Timings start from preprocessed pixels and include CLIP image encoding.

    python tools/bench_core.py                                 # CPU: greedy and beam 5 at batch 1 and 16, fp32 and
                                                               # int8 GPT-2 weights
    python tools/bench_core.py --weights fp32 bf16 int8        # also bf16 GPT-2 weights
    python tools/bench_core.py --device cuda --dtype fp16 --batch-sizes 1 16 64

``--weights`` (CPU): the precision of GPT-2's weights on our side (int8: lib_clipcap.quant; bf16: GPT-2 cast to
bf16); CLIP and the mapper stay in ``--dtype``, and the original loop always runs the fp32 model. For each extra
precision the greedy captions are compared token by token with fp32's (random weights make near-ties common, so this
is a lower bound for trained models). The goals of issue 13 are checked at the end.

At batch 1 it also measures a floor (``--no-floor`` skips it): CLIP's image encoding plus, for each decoding step,
every weight matrix of GPT-2 (the LM head included) applied to one row (greedy) or ``--beam`` rows (beam search), and
nothing else: no attention, no layer norms, no Python. No decoder with those weights can caption one image faster
on this machine, so ``original / floor`` is the highest speed-up a batch-1 goal can ask for here.

Prints a Markdown table (medians) and writes JSON to artifacts/bench_core.json.
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import copy

import torch

import _bench_common as common  # first: puts the repository on sys.path
from lib_clipcap.clip import ClipBackbone
from lib_clipcap.decoding import DecodingOptions, decode
from lib_clipcap.gpt2 import GPT2Config
from lib_clipcap.model import ClipCapConfig, ClipCapModel
from devtools.reference import original_beam, original_greedy, with_original_layers

sync = common.sync


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--original-images", type=int, default=3, help="images timed with the original loop")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights", nargs="+", choices=["fp32", "bf16", "int8"], default=None,
                    help="GPT-2 weight precisions to time (CPU; default: fp32 int8 where int8 is available)")
    ap.add_argument("--no-floor", dest="floor", action="store_false", help="skip the batch-1 floor measurement")
    ap.add_argument("--out", type=Path, default=common.ROOT / "artifacts" / "bench_core.json")
    args = ap.parse_args()
    device, dtype = common.device_and_dtype(args)
    from lib_clipcap.quant import int8_available, int8_kernel, quantize_gpt2_

    if args.weights is None:
        args.weights = ["fp32", "int8"] if device.type == "cpu" and int8_available() else ["fp32"]
    if device.type != "cpu":
        args.weights = ["fp32"]  # on a GPU, --dtype is the precision

    clip = ClipBackbone.load("ViT-B-32", None, device=device, dtype=dtype)
    model = ClipCapModel(ClipCapConfig(mapping="mlp", prefix_length=10, prefix_size=512, mlp_hidden=(3840,),
                                       gpt2=GPT2Config())).to(device, dtype).eval()
    gpt = model.gpt
    max_b = max(args.batch_sizes)
    pixels = torch.randn(max(max_b, args.original_images), 3, 224, 224)
    no_stop: list[int] = []  # fixed-length captions: both implementations do the same number of steps

    gpts = {"fp32": gpt}
    if "bf16" in args.weights:
        gpts["bf16"] = copy.deepcopy(gpt).to(torch.bfloat16)
    kernel = None
    if "int8" in args.weights:
        gpts["int8"] = quantize_gpt2_(copy.deepcopy(gpt))
        kernel = int8_kernel().describe()  # which engine and weight range this CPU got (lib_clipcap.quant)
        print(f"int8 kernel: {kernel}", flush=True)

    def ours(batch: int, mode: str, weights: str = "fp32", tokens_out: list | None = None) -> float:
        opts = DecodingOptions(mode=mode, beam_size=args.beam, max_new_tokens=args.tokens)
        g = gpts[weights]
        sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            prefix = model.prefix_embeddings(clip.encode_images(pixels[:batch]))
            out = decode(g, prefix.to(g.transformer.wte.weight.dtype), opts, stop_ids=no_stop, pad_id=50256)
        sync(device)
        assert all(len(o[0].tokens) == args.tokens for o in out)
        if tokens_out is not None:
            tokens_out.extend(list(o[0].tokens) for o in out)
        return (time.perf_counter() - t) / batch

    original_gpt = with_original_layers(gpt)  # the original's layer layout (Hugging Face's Conv1D), same weights

    def original(mode: str) -> float:
        sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            for i in range(args.original_images):  # one image at a time, as the original scripts did
                prefix = model.prefix_embeddings(clip.encode_images(pixels[i : i + 1]))
                if mode == "greedy":
                    original_greedy(original_gpt, prefix, stop_ids=no_stop, max_new_tokens=args.tokens)
                else:
                    original_beam(original_gpt, prefix, stop_ids=no_stop, beam_size=args.beam,
                                  max_new_tokens=args.tokens)
        sync(device)
        return (time.perf_counter() - t) / args.original_images

    for w in args.weights:
        ours(2, "greedy", w)  # warm-up (allocator, kernels, quantized engine)
    rows = []
    for mode in ("greedy", "beam"):
        base = original(mode)
        for w in args.weights:
            for b in args.batch_sizes:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                per_image = statistics.median(ours(b, mode, w) for _ in range(args.repeats))
                peak = (torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None
                rows.append({"mode": mode if mode == "greedy" else f"beam {args.beam}", "weights": w, "batch": b,
                             "original_s_per_image": base, "ours_s_per_image": per_image,
                             "images_per_s": 1 / per_image, "speedup": base / per_image, "peak_gpu_mib": peak})
                print(f"{rows[-1]['mode']:>8} {w} batch {b:>3}: original {base:.3f} s/img, ours {per_image:.3f} "
                      f"s/img, {1 / per_image:.2f} img/s, x{base / per_image:.1f}", flush=True)
    floors = _floors(clip, gpts, pixels[:1], args, device) if args.floor and 1 in args.batch_sizes else []
    for f in floors:
        ours_row = next(r for r in rows if (r["mode"], r["weights"], r["batch"]) == (f["mode"], f["weights"], 1))
        f["original_s_per_image"] = ours_row["original_s_per_image"]
        f["max_speedup"] = f["original_s_per_image"] / f["floor_s_per_image"]
        f["ours_share_of_floor_speed"] = f["floor_s_per_image"] / ours_row["ours_s_per_image"]
    agreement = {}
    for w in args.weights[1:] if args.weights[0] == "fp32" else []:
        ref, got = [], []
        n = min(16, pixels.shape[0])
        ours(n, "greedy", "fp32", ref)
        ours(n, "greedy", w, got)
        same = sum(a == b for r, g in zip(ref, got) for a, b in zip(r, g))
        first = [next((i for i, (a, b) in enumerate(zip(r, g)) if a != b), len(r)) for r, g in zip(ref, got)]
        with torch.inference_mode():  # next-token logits after the prefix: the error the decoder sees
            prefix = model.prefix_embeddings(clip.encode_images(pixels[:n]))
            ref_logits = gpts["fp32"](prefix, last_only=True).float()
            got_logits = gpts[w](prefix.to(gpts[w].transformer.wte.weight.dtype), last_only=True).float()
        agreement[w] = {"logits_relative_error": float((got_logits - ref_logits).norm() / ref_logits.norm()),
                        "token_agreement": same / sum(len(r) for r in ref),
                        "identical_captions": sum(r == g for r, g in zip(ref, got)) / len(ref),
                        "median_tokens_before_first_difference": statistics.median(first)}
        print(f"{w} vs fp32 greedy, {n} random-weight captions: {agreement[w]}", flush=True)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    goals = _goals(rows, args.beam, floors)
    result = {"hardware": common.hardware(device), "device": str(device), "dtype": args.dtype, "tokens": args.tokens,
              "model": "ViT-B-32 + MLP prefix 10 + GPT-2 small (random weights)", "rows": rows,
              "agreement_with_fp32": agreement, "batch1_floor": floors, "goals": goals, "peak_rss_mib": peak_rss,
              "int8_kernel": kernel}
    common.write_json(args.out, result)
    print(f"\n{result['hardware']}, {args.dtype}, {args.tokens}-token captions, medians of {args.repeats}\n")
    print("| decoding | GPT-2 weights | batch | original s/img | ours s/img | images/s | speed-up | peak GPU MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['weights']} | {r['batch']} | {r['original_s_per_image']:.3f} | "
              f"{r['ours_s_per_image']:.3f} | {r['images_per_s']:.2f} | {r['speedup']:.1f}x | "
              f"{common.gpu_mib(r['peak_gpu_mib'])} |")
    if floors:
        common.print_table("batch-1 floor: CLIP encoding + GPT-2's matrix products per step, nothing else",
                           ["decoding", "GPT-2 weights", "floor s/img", "ours s/img", "ours / floor speed",
                            "max speed-up over the original"],
                           [[f["mode"], f["weights"], f"{f['floor_s_per_image']:.3f}",
                             f"{f['floor_s_per_image'] / f['ours_share_of_floor_speed']:.3f}",
                             f"{100 * f['ours_share_of_floor_speed']:.0f} %", f"{f['max_speedup']:.1f}x"]
                            for f in floors])
    print(f"\npeak process RSS: {peak_rss:.0f} MiB")
    if kernel:
        print(f"int8 kernel: {kernel}")
    if goals:
        print("\ngoals (speed-up against the original loop, same run):")
        for g in goals:
            state = "met " if g["met"] else ("BEYOND FLOOR" if g.get("above_floor") else "MISSED")
            ceiling = f" (floor allows {g['max_speedup']:.1f}x)" if g.get("max_speedup") else ""
            print(f"  {state} {g['goal']}: {g['speedup']:.1f}x{ceiling}")


#: Issue 13's goals on a CPU: (decoding, weights, batch, minimum speed-up over the original loop).
CPU_GOALS = (("greedy", "fp32", 1, 3.6), ("beam", "fp32", 1, 6.0), ("greedy", "int8", 1, 10.0),
             ("greedy", "fp32", 16, 10.0), ("beam", "fp32", 16, 10.0))


def _goals(rows: list[dict], beam: int, floors: list[dict]) -> list[dict]:
    """Each CPU goal met or not; a batch-1 goal above what the measured floor allows is marked ``above_floor``."""
    out = []
    for mode, weights, batch, minimum in CPU_GOALS:
        name = mode if mode == "greedy" else f"beam {beam}"
        row = next((r for r in rows if (r["mode"], r["weights"], r["batch"]) == (name, weights, batch)), None)
        if row is not None and row.get("peak_gpu_mib") is None:  # CPU rows only
            floor = next((f for f in floors if (f["mode"], f["weights"]) == (name, weights) and batch == 1), None)
            out.append({"goal": f"{name} {weights} batch {batch} >= {minimum}x", "speedup": row["speedup"],
                        "met": row["speedup"] >= minimum,
                        "max_speedup": floor["max_speedup"] if floor else None,
                        "above_floor": bool(floor and minimum > floor["max_speedup"])})
    return out


def _floors(clip, gpts: dict, pixel: torch.Tensor, args, device) -> list[dict]:
    """The batch-1 floor per decoding mode and weight precision (see the module docstring): seconds per image."""
    from lib_clipcap.quant import Int8Linear

    def median_time(fn, repeats: int = 7) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    with torch.inference_mode():
        clip_s = median_time(lambda: clip.encode_images(pixel))
        out = []
        for weights, g in gpts.items():
            mats = [m for m in g.modules() if isinstance(m, (torch.nn.Linear, Int8Linear))]
            dtype = torch.float32 if weights == "int8" else g.transformer.wte.weight.dtype
            for mode, rows in (("greedy", 1), (f"beam {args.beam}", args.beam)):
                xs = [torch.randn(rows, m.in_features, dtype=dtype, device=device) for m in mats]

                def step(mats=mats, xs=xs) -> None:
                    for m, x in zip(mats, xs):
                        m(x)

                # args.tokens weight passes: the prefill yields the first token, each later step one more
                floor = clip_s + args.tokens * median_time(step)
                out.append({"mode": mode, "weights": weights, "clip_s": clip_s, "floor_s_per_image": floor})
    return out


if __name__ == "__main__":
    main()
