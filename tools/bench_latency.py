"""Single-image warm latency, the WebUI's case: one JPEG file in, one caption out per call, model loaded and warm.

Real-size architecture with random weights (the compute is the same as with trained ones): open_clip ViT-B-32 (or
``--clip ViT-L-14``, the Flickr models' backbone), ClipCap's MLP mapper (prefix 10) on GPT-2 small, GPT-2's tokenizer.
Each call is :meth:`Captioner.caption` on one file path: JPEG decoding, preprocessing, CLIP, decoding, text. Every
caption is exactly ``--tokens`` tokens long, so every call does the same work. ``--warmup`` calls are not timed.

    python tools/bench_latency.py                                           # CPU fp32, ViT-B-32
    python tools/bench_latency.py --device cuda --dtype fp16 --clip ViT-L-14

Prints a Markdown table (median and 90th percentile per call, peak GPU memory) and writes JSON to
artifacts/bench_latency.json.
"""

from __future__ import annotations

import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _bench_common as common  # first: puts the repository on sys.path
from bench_batch import build_captioner, make_jpegs

ROOT = common.ROOT


def main() -> None:
    ap = common.parser(__doc__, clip_help=common.CLIP_HELP)
    ap.add_argument("--calls", type=int, default=20, help="timed single-image calls per decoding mode")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls first (allocator, kernels, caches)")
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--size", type=int, default=512, help="JPEG side in pixels")
    ap.add_argument("--modes", nargs="+", default=["greedy", "beam"], choices=["greedy", "beam"],
                    help="decoding modes to time (beam: 5 beams, one caption)")
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench_latency.json")
    args = ap.parse_args()
    if args.calls < 1 or args.warmup < 0:
        ap.error(f"--calls must be >= 1 and --warmup >= 0; got {args.calls} and {args.warmup}")
    device, _ = common.device_and_dtype(args)

    import torch

    on_gpu = device.type == "cuda"
    work = Path(tempfile.mkdtemp(prefix="clipcap-latency-"))
    rows = []
    try:
        files = make_jpegs(work, args.warmup + args.calls, args.size)
        t = time.perf_counter()
        cap = build_captioner(args.clip, args.device, args.dtype)
        load_s = time.perf_counter() - t
        for mode in args.modes:
            kw = dict(decoding=mode, beam_size=5, num_candidates=1, max_new_tokens=args.tokens,
                      min_new_tokens=args.tokens)
            for f in files[: args.warmup]:
                cap.caption([str(f)], **kw)
            if on_gpu:
                torch.cuda.reset_peak_memory_stats()
            times = []
            for f in files[args.warmup:]:
                common.sync(device)
                t = time.perf_counter()
                (res,) = cap.caption([str(f)], **kw)
                common.sync(device)
                times.append(time.perf_counter() - t)
                if res.error:
                    raise SystemExit(f"bench_latency: captioning {f} failed: {res.error}")
            ordered = sorted(times)
            rows.append({"decoding": mode if mode == "greedy" else "beam 5", "calls": len(times),
                         "median_ms": 1000 * statistics.median(times),
                         "p90_ms": 1000 * ordered[math.ceil(0.9 * len(ordered)) - 1],  # nearest rank
                         "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {"hardware": common.hardware(device), "device": args.device, "dtype": args.dtype, "clip": args.clip,
              "model": f"{args.clip} + MLP prefix 10 + GPT-2 small (random weights), GPT-2 tokenizer",
              "image_size": args.size, "tokens": args.tokens, "warmup": args.warmup, "load_s": load_s, "rows": rows}
    common.write_json(args.out, result)
    common.print_table(
        f"{result['hardware']}; {args.clip} + GPT-2 small, {args.dtype}, one {args.size}x{args.size} JPEG per call, "
        f"{args.tokens}-token captions, {args.warmup} warm-up calls; model built in {load_s:.1f} s",
        ["decoding", "calls", "median ms/image", "p90 ms/image", "peak GPU MiB"],
        [[r["decoding"], f"{r['calls']}", f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}",
          common.gpu_mib(r["peak_gpu_mib"])] for r in rows])


if __name__ == "__main__":
    main()
