"""``python -m lib_clipcap train grammar``: train a CLIP-S grammar head on a caption corpus.

    python -m lib_clipcap train grammar --captions captions.txt --clip-model ViT-B-32 --clip-pretrained openai \\
        --out models/grammar-vitb32 [--finetune-text]

Negatives are made from the captions by repeating, inserting, swapping, shuffling and removing words; a held-out
share of the captions (never trained on) measures the accuracy on clean/corrupted pairs, written to
``grammar.json``. The head is then used with ``rerank="clip+grammar"`` (see :mod:`lib_clipcap.scoring`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "train a CLIP-S grammar head (grammatical vs corrupted captions) on a caption corpus"


def read_captions(path: str | Path, *, lowercase: bool = False) -> list[str]:
    """Captions from a text file (one per line), Flickr's ``captions.txt`` (CSV ``image,caption`` with a header),
    a JSON list of strings, COCO annotations (``{"annotations": [{"caption": ...}]}``) or JSONL.

    Raises:
        MissingFileError: ``path`` does not exist.
        ClipCapError: nothing usable was found.
    """
    from ..errors import ClipCapError, MissingFileError

    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingFileError(f"caption file not found: {p}")
    text = p.read_text(encoding="utf-8")
    caps: list[str] = []
    if p.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            data = [a.get("caption", "") for a in data.get("annotations", [])]
        caps = [c for c in data if isinstance(c, str)]
    elif p.suffix == ".jsonl":
        for line in text.splitlines():
            if line.strip():
                obj = json.loads(line)
                c = obj.get("captions", obj.get("caption", []))
                caps.extend([c] if isinstance(c, str) else c)
    else:
        lines = [l.strip() for l in text.splitlines() if l.strip()]
        if lines and lines[0].lower().replace(" ", "") == "image,caption":  # Flickr8k's captions.txt
            caps = [l.split(",", 1)[1].strip().strip('"') for l in lines[1:] if "," in l]
        else:
            caps = lines
    caps = [" ".join(c.split()) for c in caps if c and c.strip()]
    if lowercase:
        caps = [c.lower() for c in caps]
    if not caps:
        raise ClipCapError(f"no captions found in {p}")
    return caps


def split_captions(captions: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Distinct captions split by a stable hash, so a held-out caption is never a training one."""
    import zlib

    uniq = sorted(set(captions))
    if val_fraction <= 0:
        return uniq, []
    every = max(2, round(1 / val_fraction))
    held = [c for c in uniq if zlib.crc32(c.encode("utf-8")) % every == 0]
    return [c for c in uniq if c not in set(held)], held


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--captions", required=True, type=Path, help="caption corpus (.txt, Flickr captions.txt, "
                                                                  ".json, COCO annotations, .jsonl)")
    p.add_argument("--out", required=True, type=Path, help="output folder (grammar.safetensors + grammar.json)")
    p.add_argument("--clip-model", default="ViT-B-32", help="open_clip model name or model-config JSON")
    p.add_argument("--clip-pretrained", default="openai", help="open_clip tag or local CLIP weights file")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of distinct captions held out")
    p.add_argument("--max-captions", type=int, help="use at most this many distinct training captions")
    p.add_argument("--lowercase", action="store_true")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, help="MLP width (default: the CLIP feature size)")
    p.add_argument("--finetune-text", action="store_true", help="also fine-tune CLIP's text encoder (a copy)")
    p.add_argument("--text-lr", type=float, default=1e-5)
    p.add_argument("--negatives", type=int, default=4, help="corrupted variants per caption")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda... (default: best available)")
    p.add_argument("--models-dir", type=Path, help="where open_clip weights are cached")


def run(args: argparse.Namespace) -> int:
    from ..devices import device_and_dtype
    from ..clip import ClipBackbone
    from ..grammar import train_grammar_head

    dev, _ = device_and_dtype(args.device, "fp32")
    caps = read_captions(args.captions, lowercase=args.lowercase)
    train, held = split_captions(caps, args.val_fraction)
    if args.max_captions:
        train = train[: args.max_captions]
    cache = (args.models_dir / "clip") if args.models_dir else None
    clip = ClipBackbone.load(args.clip_model, args.clip_pretrained, device=dev, cache_dir=cache)
    print(f"clipcap: training a grammar head on {len(train)} captions ({len(held)} held out), CLIP {clip.name}",
          flush=True)
    scorer, metrics = train_grammar_head(
        clip, train, val_captions=held, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        hidden=args.hidden, finetune_text=args.finetune_text, text_lr=args.text_lr,
        negatives_per_caption=args.negatives, seed=args.seed, progress=lambda s: print(s, flush=True))
    scorer.save(args.out)
    print(json.dumps(metrics, indent=2))
    print(f"clipcap: wrote {args.out}")
    return 0
