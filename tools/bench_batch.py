"""Batch-tagging benchmark: ``run_tagging`` end to end vs a sequential one-image-at-a-time loop, same run.

Real-size architecture with random weights (the compute is the same as with trained ones): open_clip ViT-B-32 (or
``--clip ViT-L-14``), ClipCap's MLP mapper (prefix 10) on GPT-2 small, GPT-2's real tokenizer (shipped with the
package). A folder of generated photo-like 512x512 JPEGs is tagged three ways, each end to end from
JPEG files to caption files on disk, every caption exactly ``--tokens`` tokens long (greedy, no early stop), so every
side does the same model work:

* **batched**: :func:`lib_clipcap.batch.run_tagging` (decoding off the inference thread, batched KV-cached decoding,
  atomic writes, journal);
* **sequential**: for each image: load, preprocess, ``caption_pixels`` on that one image, write -- our cached
  decoder at batch 1;
* **original-style**: the same loop with the original ClipCap greedy decoder (no KV cache), on fewer images
  (``--original-images``; 0 skips it).

    python tools/bench_batch.py                                  # CPU fp32
    python tools/bench_batch.py --device cuda --dtype fp16 --clip ViT-L-14 --images 2048 --batch-size 256

Prints a Markdown table (medians over ``--repeats``) and writes JSON to artifacts/bench_batch.json.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _bench_common as common  # first: puts the repository on sys.path

ROOT = common.ROOT


def make_jpegs(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """Photo-like JPEGs: smooth colour fields plus grain (so JPEG decoding costs what photos cost) and shapes."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), dtype=np.int16)
        grain = rng.normal(0, 18, (size, size, 3))
        img = Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 4))):
            x, y = rng.integers(0, size - size // 4, 2)
            r = int(rng.integers(size // 16, size // 4))
            box = [int(x), int(y), int(x) + r, int(y) + r]
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=color)
        p = folder / f"photo_{i:05d}.jpg"
        img.save(p, quality=90)
        out.append(p)
    return out


def build_captioner(clip_name: str, device: str, dtype: str):
    """Random-weight ClipCap (MLP, prefix 10, GPT-2 small) on a random-weight open_clip backbone, GPT-2's tokenizer."""
    import torch

    from lib_clipcap.captioner import Captioner, resolve_tokenizer
    from lib_clipcap.devices import device_and_dtype
    from lib_clipcap.clip import ClipBackbone
    from lib_clipcap.gpt2 import GPT2Config
    from lib_clipcap.model import ClipCapConfig, ClipCapModel

    dev, dt = device_and_dtype(device, dtype)
    torch.manual_seed(0)
    clip = ClipBackbone.load(clip_name, None, device=dev, dtype=dt)
    cfg = ClipCapConfig(mapping="mlp", prefix_length=10, prefix_size=clip.embed_dim, mlp_hidden=(3840,),
                        gpt2=GPT2Config())
    model = ClipCapModel(cfg).to(dev, dt)
    return Captioner(clip, model, resolve_tokenizer("gpt2"), name=f"random-{clip_name}")  # the bundled BPE files


def main() -> None:
    ap = common.parser(__doc__, clip_help=common.CLIP_HELP)
    ap.add_argument("--images", type=int, default=64, help="JPEGs tagged by the batched pipeline")
    ap.add_argument("--seq-images", type=int, default=8, help="JPEGs tagged by the sequential loop")
    ap.add_argument("--original-images", type=int, default=2, help="JPEGs for the original-decoder loop (0: skip)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--batch-size", type=int, help="default: 32 on CPU, 256 on GPU")
    ap.add_argument("--workers", type=int, help="decoding processes (default: run_tagging's choice)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench_batch.json")
    args = ap.parse_args()
    device, _ = common.device_and_dtype(args)

    import torch

    from lib_clipcap.batch import TagOptions, run_tagging
    from lib_clipcap.fileio import atomic_write_text
    from lib_clipcap.images import load_image
    from devtools.reference import original_greedy, with_original_layers

    on_gpu = device.type == "cuda"
    batch_size = args.batch_size or (256 if on_gpu else 32)
    work = Path(tempfile.mkdtemp(prefix="clipcap-bench-"))
    try:
        t = time.perf_counter()
        imgs = make_jpegs(work / "batch", args.images, args.size)
        seq = make_jpegs(work / "seq", max(args.seq_images, args.original_images), args.size, seed=1)
        print(f"generated {len(imgs) + len(seq)} {args.size}x{args.size} JPEGs in {time.perf_counter() - t:.1f} s",
              flush=True)
        cap = build_captioner(args.clip, args.device, args.dtype)
        opts = cap.decoding_options(decoding="greedy", max_new_tokens=args.tokens,
                                    min_new_tokens=args.tokens)  # greedy, exactly N tokens, as run_tagging
        tag = TagOptions(inputs=[str(work / "batch")], existing="overwrite", resume=False, batch_size=batch_size,
                         workers=args.workers, max_new_tokens=args.tokens, min_new_tokens=args.tokens)

        def batched() -> float:
            common.sync(device)
            s = run_tagging(tag, cap)
            assert s.written == len(imgs) and s.failed == 0, s.failures[:3]
            return len(imgs) / s.elapsed_s

        original_gpt = with_original_layers(cap.model.gpt)  # the original's layer layout, same weights

        def sequential(paths: list[Path], original: bool) -> float:
            common.sync(device)
            t0 = time.perf_counter()
            for p in paths:  # one image at a time: load, preprocess, caption, write
                pixels = cap.clip.preprocess(load_image(str(p))).unsqueeze(0)
                if original:
                    with torch.inference_mode():
                        prefix = cap.model.prefix_embeddings(cap.clip.encode_images(pixels))
                        ids = original_greedy(original_gpt, prefix, stop_ids=[], max_new_tokens=args.tokens)
                    text = cap.tokenizer.decode(ids).strip()
                else:
                    text = cap.caption_pixels(pixels, opts)[0].text
                atomic_write_text(p.with_suffix(".txt"), text)
            common.sync(device)
            return len(paths) / (time.perf_counter() - t0)

        sequential(seq[:1], False)  # warm-up: allocator, kernels, forkserver
        run_tagging(TagOptions(inputs=[str(imgs[0])], existing="overwrite", resume=False,
                               max_new_tokens=args.tokens, min_new_tokens=args.tokens), cap)
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()  # peak of the timed runs, weights included
        rates = {"batched": [], "sequential": []}
        for r in range(args.repeats):
            rates["batched"].append(batched())
            rates["sequential"].append(sequential(seq[: args.seq_images], False))
            print(f"repeat {r + 1}: batched {rates['batched'][-1]:.2f} img/s, sequential "
                  f"{rates['sequential'][-1]:.2f} img/s", flush=True)
        peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None
        original = sequential(seq[: args.original_images], True) if args.original_images else None
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "hardware": common.hardware(device), "device": args.device, "dtype": args.dtype, "clip": args.clip,
        "model": f"{args.clip} + MLP prefix 10 + GPT-2 small (random weights), GPT-2 tokenizer",
        "image_size": args.size, "tokens": args.tokens, "batch_size": batch_size, "workers": args.workers,
        "images": args.images, "seq_images": args.seq_images, "original_images": args.original_images,
        "repeats": args.repeats, "runs_images_per_s": rates,
        "batched_images_per_s": med["batched"], "sequential_images_per_s": med["sequential"],
        "original_images_per_s": original,
        "speedup_vs_sequential": med["batched"] / med["sequential"],
        "speedup_vs_original": (med["batched"] / original) if original else None,
        "peak_gpu_mib": peak_gpu,
    }
    common.write_json(args.out, result)
    print(f"\n{result['hardware']}; {args.clip} + GPT-2 small, {args.dtype}, {args.size}x{args.size} JPEGs, "
          f"{args.tokens}-token captions, batch {batch_size}; medians of {args.repeats}; peak GPU memory "
          f"{common.gpu_mib(peak_gpu)} MiB\n")
    print("| loop | images | images/s | speed-up of batched |")
    print("|---|---|---|---|")
    print(f"| batched `run_tagging` | {args.images} | {med['batched']:.2f} | 1.0x |")
    print(f"| sequential, cached decoder, 1 image at a time | {args.seq_images} | {med['sequential']:.2f} | "
          f"{result['speedup_vs_sequential']:.1f}x |")
    if original:
        print(f"| sequential, original uncached decoder | {args.original_images} | {original:.2f} | "
              f"{result['speedup_vs_original']:.1f}x |")


if __name__ == "__main__":
    main()
