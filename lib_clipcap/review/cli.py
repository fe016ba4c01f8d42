"""``python -m lib_clipcap review FOLDER``: score a tagged training set's captions and list the worst first.

Prints a table (worst first) to stdout, or writes every row to ``--json`` / ``--csv`` (``-``: stdout); a summary with
the flag counts and the scoring speed goes to stderr. Exit status: 0 done, 2 bad usage or a fatal error.

Tag captions (kohya style, ``sks, red, triangle``): each row's tags are scored against its image (``--tag-vocabulary``
gives their prompts; see :mod:`lib_clipcap.review.tags`) and listed lowest first, ``!`` marking the ones the image
disagrees with; ``--has-tag`` filters, ``--sort tags`` puts the rows whose tags the image disagrees with most first,
``--add-tag`` / ``--remove-tag`` change the listed rows' tags as one undoable save (``--dry-run``: only say what would
change), ``--undo`` undoes the folder's last save.
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
                "flags", "error", "caption_error", "triggers", "body", "tags", "tag_min")


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
    g.add_argument("--tag-vocabulary", default="general", metavar="NAME|FILE|none",
                   help="tag vocabulary whose prompts and categories score a tag caption's tags (a bundled name: "
                        "general (default), shapes, colour...; or a .txt/.json file); 'none': no tag scores")
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
    g.add_argument("--has-tag", action="append", default=[], metavar="TAG",
                   help="only rows whose caption holds this tag (repeatable: all of them)")
    g.add_argument("--json", metavar="OUT", help="write the rows as JSON to OUT ('-': stdout)")
    g.add_argument("--csv", metavar="OUT", help="write the rows as CSV to OUT ('-': stdout)")
    g = p.add_argument_group("edits (atomic, journaled, undoable: as the review section saves)")
    g.add_argument("--add-tag", action="append", default=[], metavar="TAG",
                   help="add this tag to every listed row (after the filters and --worst) that lacks it, at the end; "
                        "trigger words stay first (repeatable; one undoable save)")
    g.add_argument("--remove-tag", action="append", default=[], metavar="TAG",
                   help="remove this tag from every listed row; the other tags keep their order (repeatable)")
    g.add_argument("--dry-run", action="store_true", help="with --add-tag/--remove-tag: say what would change")
    g.add_argument("--undo", action="store_true", help="undo the folder's last review save (an edit, a bulk edit or "
                                                       "a tag change) and exit")


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
        d["tags"] = ", ".join(r.tags)
        w.writerow(["" if d[c] is None else d[c] for c in _CSV_COLUMNS])
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    """Run ``review`` (see the module docstring)."""
    from ..errors import ClipCapError
    from .table import filter_rows, scan_folder, sort_rows
    from .tags import check_tags

    if args.worst is not None and args.worst < 1:
        raise ClipCapError(f"--worst {args.worst}: must be >= 1")
    if args.batch_size < 1:
        raise ClipCapError(f"--batch-size {args.batch_size}: must be >= 1")
    has_tags = check_tags("--has-tag", args.has_tag)
    add, remove = check_tags("--add-tag", args.add_tag), check_tags("--remove-tag", args.remove_tag)
    if args.no_scores and args.sort in ("clip", "grammar", "ref", "tags"):
        args.sort = "length"
    table = scan_folder(args.folder, caption_ext=args.caption_ext, output_dir=args.output_dir,
                        recursive=args.recursive, include=args.include, exclude=args.exclude, triggers=args.trigger,
                        token_limit=args.token_limit, duplicate_min=args.duplicate_min, ref_ext=args.ref_ext,
                        ref_dir=args.ref_dir)
    if args.undo:
        from .edits import undo_last

        out = undo_last(table)
        if not out:
            eprint("nothing to undo")
        for o in out:
            eprint(f"{o.status}: {o.caption_file}" + (f" ({o.reason})" if o.reason else ""))
        return 0
    speed = ""
    scorer = None
    if not args.no_scores and table.rows:
        from .scoring import ReviewScorer, default_grammar

        clip = _load_clip(args)
        grammar = default_grammar(clip, args.grammar)
        if args.grammar == "bundled" and grammar is None:
            eprint(f"no grammar head is bundled for CLIP {clip.name!r}: no grammar column (train one with "
                   f"`python -m lib_clipcap train grammar` and pass --grammar DIR)")
        tag_scorer = None
        if args.tag_vocabulary and args.tag_vocabulary != "none":
            from ..tags.cache import TagTextCache, default_cache_dir
            from .tags import ReviewTagScorer

            tag_scorer = ReviewTagScorer(clip, args.tag_vocabulary,
                                         cache=TagTextCache(default_cache_dir(args.models_dir) if args.cache else None))
        scorer = ReviewScorer(clip, grammar, prefix=args.clip_prefix, batch_size=args.batch_size,
                              workers=args.workers, use_cache=args.cache, tags=tag_scorer)
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
    rows = sort_rows(filter_rows(table.rows, flags=args.flag, tags=has_tags), args.sort)
    if args.worst:
        rows = rows[:args.worst]
    if add or remove:
        _edit_tags(table, rows, add, remove, scorer, dry_run=args.dry_run)
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
            if r.tags:
                print(f"{'':>7} tags: {_tags_line(r)}")
    return 0


def _tags_line(r: Any) -> str:
    """A row's tags, lowest score first, ``!`` (and what the image shows) where the image disagrees."""
    if not r.tag_scores:
        return ", ".join(r.tags)
    return ", ".join(f"{d['tag']} {d['score']:.3f}" + ("!" + (f" (image: {d['better']})" if d["better"] else "")
                                                         if d["flagged"] else "") for d in r.tag_scores)


def _edit_tags(table: Any, rows: list[Any], add: list[str], remove: list[str], scorer: Any, *,
               dry_run: bool) -> None:
    """``--add-tag`` / ``--remove-tag`` on the listed rows: one save (undo: ``--undo``); the saved rows rescored."""
    from .edits import plan_tags, save_captions

    plan = plan_tags(rows, add=add, remove=remove, table=table)
    if dry_run:
        eprint(f"{len(plan)} of {len(rows)} caption files would change (dry run: nothing written)")
        for r, text in plan[:10]:
            eprint(f"  {r.rel}: {r.caption!r} -> {text!r}")
        return
    out = save_captions(table, [(r.image, t) for r, t in plan]) if plan else []
    saved = [o for o in out if o.status == "saved"]
    for o in out:
        if o.status == "failed":
            eprint(f"not written: {o.caption_file}: {o.reason}")
    eprint(f"changed the tags of {len(saved)} of {len(rows)} caption files" + ("; `--undo` reverts them" if saved
                                                                               else ""))
    if scorer is not None and saved:
        done = {o.image for o in saved}
        scorer.score([r for r in table.rows if r.image in done])


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
