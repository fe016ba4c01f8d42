"""``python -m lib_clipcap review FOLDER``: score a tagged training set's captions and list the worst first.

Prints a table (worst first) to stdout, or writes every row to ``--json`` / ``--csv`` (``-``: stdout); a summary with
the flag counts and the scoring speed goes to stderr. Exit status: 0 done, 2 bad usage or a fatal error.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from typing import Any

from ..cli_common import eprint

HELP = "score a tagged folder's captions (CLIP-S, grammar, flags) and list the worst first"

_CSV_COLUMNS = ("image", "caption_file", "caption", "clip_score", "grammar", "ref_clip_score", "length", "tokens",
                "flags", "error", "caption_error", "triggers", "body")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``review`` command's arguments to ``p``."""
    from .flags import DEFAULT_DUPLICATE_MIN, DEFAULT_TOKEN_LIMIT, FLAGS
    from .table import SORT_KEYS

    p.add_argument("folder", metavar="FOLDER", help="the dataset folder (searched recursively, as `tag` does)")
    g = p.add_argument_group("captions (as given to `tag`)")
    g.add_argument("--ext", dest="caption_ext", default=".txt", help="caption file suffix (default .txt)")
    g.add_argument("--output-dir", help="captions are mirrored under this folder instead of beside the images")
    g.add_argument("--no-recursive", dest="recursive", action="store_false", help="do not descend into sub-folders")
    g.add_argument("--include", action="append", default=[], metavar="GLOB", help="only files matching this glob")
    g.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="leave out matching files")
    g.add_argument("--ref-ext", metavar="EXT", help="a second caption source for RefCLIP-S: sidecars with this suffix")
    g.add_argument("--ref-dir", metavar="DIR", help="a second caption source for RefCLIP-S: mirrored under DIR")
    g = p.add_argument_group("flags")
    g.add_argument("--trigger", action="append", metavar="WORD",
                   help="trigger word(s), as given to `tag --trigger` (repeatable; default: detected, the leading "
                        "comma-separated segment most captions share): shown apart, left out of CLIP-S and grammar "
                        "scoring, and the trigger_only flag")
    g.add_argument("--token-limit", type=int, default=DEFAULT_TOKEN_LIMIT,
                   help=f"flag captions longer than this many CLIP tokens (default {DEFAULT_TOKEN_LIMIT}: kohya's "
                        f"max_token_length; 150 or 225 when training with a longer one)")
    g.add_argument("--duplicate-min", type=int, default=DEFAULT_DUPLICATE_MIN,
                   help=f"flag a caption shared by this many images or more (default {DEFAULT_DUPLICATE_MIN})")
    g = p.add_argument_group("scoring model (CLIP only: the captioning model is not loaded)")
    g.add_argument("--model", "-m", help="use this registry model's CLIP (default: flickr8k's, falling back to the "
                                         "bundled demo model when it is not available)")
    g.add_argument("--clip-model", help="any open_clip model name or model-config JSON instead of --model")
    g.add_argument("--clip-pretrained", help="open_clip pretrained tag or local weights file for --clip-model")
    g.add_argument("--grammar", default="bundled", metavar="PATH|bundled|none",
                   help="grammar head: 'bundled' (the one shipped for this CLIP, if any; default), a folder from "
                        "`train grammar`, or 'none'")
    g.add_argument("--clip-prefix", default="", help="text put before each caption for CLIP-S (Hessel's code uses "
                                                     "'A photo depicts '; default: the bare caption)")
    g.add_argument("--no-scores", action="store_true", help="flags only: load no model")
    g.add_argument("--models-dir", help="models folder (default: $CLIPCAP_MODELS_DIR or ~/.cache/clipcap)")
    g.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    g.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="default: fp16 on GPU, fp32 on CPU")
    g.add_argument("--batch-size", type=int, default=64, help="images per CLIP batch (default 64)")
    g.add_argument("--workers", type=int, help="image-decoding processes (default: 0 on CPU, up to 16 on a GPU)")
    g.add_argument("--no-cache", dest="cache", action="store_false",
                   help="do not read or write the image-feature cache (.clipcap-review-cache in the folder)")
    g.add_argument("--offline", action="store_true", help="never download (same as HF_HUB_OFFLINE=1)")
    g = p.add_argument_group("output")
    g.add_argument("--sort", choices=SORT_KEYS, default="clip",
                   help="worst first by: clip (lowest CLIP-S, default), grammar, ref (RefCLIP-S), length (shortest), "
                        "path")
    g.add_argument("--worst", type=int, metavar="N", help="only the N worst rows")
    g.add_argument("--flag", action="append", default=[], choices=list(FLAGS) + ["any", "none"],
                   help="only rows with this flag (repeatable)")
    g.add_argument("--json", metavar="OUT", help="write the rows as JSON to OUT ('-': stdout)")
    g.add_argument("--csv", metavar="OUT", help="write the rows as CSV to OUT ('-': stdout)")


def _load_clip(args: argparse.Namespace) -> Any:
    import os

    from ..options_table import DEMO_MODEL
    from ..errors import MissingFileError
    from ..registry import DEFAULT_MODEL
    from .scoring import load_review_clip

    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    common = dict(device=args.device, dtype=args.dtype, models_dir=args.models_dir)
    if args.clip_model or args.model:
        return load_review_clip(model=args.model, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                                **common)
    try:
        return load_review_clip(model=DEFAULT_MODEL, **common)
    except MissingFileError as e:
        eprint(f"the default model's CLIP is not available here: {e}")
        eprint(f"scoring with the bundled demo model's tiny CLIP ('{DEMO_MODEL}'), which only knows coloured "
               f"shapes: its scores mean little for real photos. Pass --model or --clip-model.")
        return load_review_clip(model=DEMO_MODEL, **common)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def _write(dest: str, text: str) -> None:
    if dest == "-":
        sys.stdout.write(text)
        return
    from pathlib import Path

    from ..fileio import atomic_write_text

    Path(dest).expanduser().parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(dest).expanduser(), text)


def _csv(rows: list[Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_CSV_COLUMNS)
    for r in rows:
        d = r.to_dict()
        d["flags"] = " ".join(r.flags)
        d["triggers"] = ", ".join(r.triggers)
        w.writerow(["" if d[c] is None else d[c] for c in _CSV_COLUMNS])
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    """Run ``review`` (see the module docstring)."""
    from ..errors import ClipCapError
    from .table import filter_rows, scan_folder, sort_rows

    if args.worst is not None and args.worst < 1:
        raise ClipCapError(f"--worst {args.worst}: must be >= 1")
    if args.batch_size < 1:
        raise ClipCapError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.no_scores and args.sort in ("clip", "grammar", "ref"):
        args.sort = "length"
    table = scan_folder(args.folder, caption_ext=args.caption_ext, output_dir=args.output_dir,
                        recursive=args.recursive, include=args.include, exclude=args.exclude, triggers=args.trigger,
                        token_limit=args.token_limit, duplicate_min=args.duplicate_min, ref_ext=args.ref_ext,
                        ref_dir=args.ref_dir)
    speed = ""
    if not args.no_scores and table.rows:
        from .scoring import ReviewScorer, default_grammar

        clip = _load_clip(args)
        grammar = default_grammar(clip, args.grammar)
        if args.grammar == "bundled" and grammar is None:
            eprint(f"no grammar head is bundled for CLIP {clip.name!r}: no grammar column (train one with "
                   f"`python -m lib_clipcap train grammar` and pass --grammar DIR)")
        scorer = ReviewScorer(clip, grammar, prefix=args.clip_prefix, batch_size=args.batch_size,
                              workers=args.workers, use_cache=args.cache)
        bar = _Progress()
        t0 = time.perf_counter()
        try:
            scorer.score(table, progress=bar)
        finally:
            bar.close()
        dt = time.perf_counter() - t0
        st = scorer.stats
        speed = (f"; scored {len(table.rows)} images in {dt:.1f} s ({len(table.rows) / dt:.1f} pairs/s; "
                 f"{st['images_encoded']} images encoded, {st['images_cached']} from the cache)")
    rows = sort_rows(filter_rows(table.rows, flags=args.flag), args.sort)
    if args.worst:
        rows = rows[:args.worst]
    summary = table.summary()
    flagged = ", ".join(f"{k} {v}" for k, v in summary.items() if k != "rows" and v)
    eprint(f"{summary['rows']} images; flags: {flagged or 'none'}"
           + (f"; trigger: {', '.join(table.triggers)}" if table.triggers else "") + speed)
    for f in table.failures:
        eprint(f"left out {f}")
    if args.json:
        _write(args.json, json.dumps({"folder": table.folder, "sort": args.sort, "summary": summary,
                                      "triggers": table.triggers, "rows": [r.to_dict() for r in rows]},
                                     ensure_ascii=False, indent=1) + "\n")
    if args.csv:
        _write(args.csv, _csv(rows))
    if not args.json and not args.csv:
        width = max([len(", ".join(r.triggers)) for r in rows] + [7])
        print(f"{'CLIP-S':>7} {'gramm.':>7} {'tokens':>6}  {'flags':<22} {'trigger':<{width}} image: caption "
              f"(without the trigger)")
        for r in rows:
            cap = "(no caption file)" if r.caption is None else r.scored_text
            cap = cap if len(cap) <= 100 else cap[:97] + "..."
            print(f"{_fmt(r.clip_score):>7} {_fmt(r.grammar):>7} {r.tokens if r.tokens is not None else '-':>6}  "
                  f"{','.join(r.flags) or '-':<22} {', '.join(r.triggers) or '-':<{width}} {r.rel}: {cap}"
                  + "".join(f"  [{e}]" for e in (r.error, r.caption_error) if e))
    return 0


class _Progress:
    """tqdm on stderr, created on the first update."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, desc="clipcap: scoring")
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
