"""Core captioning benchmark: our batched KV-cached decoder vs the original per-image uncached loop, same run.

Real-size architecture with random weights (the compute is the same as with trained ones): open_clip ViT-B-32 and
ClipCap's MLP mapper (prefix 10) on GPT-2 small. Every caption is exactly ``--tokens`` tokens long (no stop token), so
both sides do identical work. Timings start from preprocessed pixels and include CLIP image encoding.

    python tools/bench_core.py                                 # CPU, fp32: greedy and beam 5 at batch 1 and 16
    python tools/bench_core.py --device cuda --dtype fp16 --batch-sizes 1 16 64

Prints a Markdown table (medians) and writes JSON to artifacts/bench_core.json.
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import torch

import _bench_common as common  # first: puts the repository on sys.path
from lib_clipcap.clip import ClipBackbone
from lib_clipcap.decoding import DecodingOptions, decode
from lib_clipcap.gpt2 import GPT2Config
from lib_clipcap.model import ClipCapConfig, ClipCapModel
from lib_clipcap.reference import original_beam, original_greedy

sync = common.sync


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--original-images", type=int, default=3, help="images timed with the original loop")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=common.ROOT / "artifacts" / "bench_core.json")
    args = ap.parse_args()
    device, dtype = common.device_and_dtype(args)

    clip = ClipBackbone.load("ViT-B-32", None, device=device, dtype=dtype)
    model = ClipCapModel(ClipCapConfig(mapping="mlp", prefix_length=10, prefix_size=512, mlp_hidden=(3840,),
                                       gpt2=GPT2Config())).to(device, dtype).eval()
    gpt = model.gpt
    max_b = max(args.batch_sizes)
    pixels = torch.randn(max(max_b, args.original_images), 3, 224, 224)
    no_stop: list[int] = []  # fixed-length captions: both implementations do the same number of steps

    def ours(batch: int, mode: str) -> float:
        opts = DecodingOptions(mode=mode, beam_size=args.beam, max_new_tokens=args.tokens)
        sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            prefix = model.prefix_embeddings(clip.encode_images(pixels[:batch]))
            out = decode(gpt, prefix, opts, stop_ids=no_stop, pad_id=50256)
        sync(device)
        assert all(len(o[0].tokens) == args.tokens for o in out)
        return (time.perf_counter() - t) / batch

    def original(mode: str) -> float:
        sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            for i in range(args.original_images):  # one image at a time, as the original scripts did
                prefix = model.prefix_embeddings(clip.encode_images(pixels[i : i + 1]))
                if mode == "greedy":
                    original_greedy(gpt, prefix, stop_ids=no_stop, max_new_tokens=args.tokens)
                else:
                    original_beam(gpt, prefix, stop_ids=no_stop, beam_size=args.beam, max_new_tokens=args.tokens)
        sync(device)
        return (time.perf_counter() - t) / args.original_images

    ours(2, "greedy")  # warm-up (allocator, kernels)
    rows = []
    for mode in ("greedy", "beam"):
        base = original(mode)
        for b in args.batch_sizes:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            per_image = statistics.median(ours(b, mode) for _ in range(args.repeats))
            peak = (torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None
            rows.append({"mode": mode if mode == "greedy" else f"beam {args.beam}", "batch": b,
                         "original_s_per_image": base, "ours_s_per_image": per_image,
                         "images_per_s": 1 / per_image, "speedup": base / per_image, "peak_gpu_mib": peak})
            print(f"{rows[-1]['mode']:>8} batch {b:>3}: original {base:.3f} s/img, ours {per_image:.3f} s/img, "
                  f"{1 / per_image:.2f} img/s, x{base / per_image:.1f}", flush=True)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"hardware": common.hardware(device), "device": str(device), "dtype": args.dtype, "tokens": args.tokens,
              "model": "ViT-B-32 + MLP prefix 10 + GPT-2 small (random weights)", "rows": rows,
              "peak_rss_mib": peak_rss}
    common.write_json(args.out, result)
    print(f"\n{result['hardware']}, {args.dtype}, {args.tokens}-token captions, medians of {args.repeats}\n")
    print("| decoding | batch | original s/img | ours s/img | images/s | speed-up | peak GPU MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['batch']} | {r['original_s_per_image']:.3f} | {r['ours_s_per_image']:.3f} | "
              f"{r['images_per_s']:.2f} | {r['speedup']:.1f}x | {common.gpu_mib(r['peak_gpu_mib'])} |")
    print(f"\npeak process RSS: {peak_rss:.0f} MiB")


if __name__ == "__main__":
    main()
