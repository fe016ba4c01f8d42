"""``python -m lib_clipcap sbg caption|keywords|import-vocabulary|check-vocabulary ...``

    python -m lib_clipcap sbg caption photo.jpg -k 5              # Selective Blind Guessing captions
    python -m lib_clipcap sbg keywords photo.jpg                  # only the CLIP keywords
    python -m lib_clipcap sbg import-vocabulary encyclopedia.pkl all_labels.pkl --out vocabulary.json
    python -m lib_clipcap sbg check-vocabulary my_vocabulary.json

``load_guesser`` and ``sbg_caption_kwargs`` also serve ``python -m lib_clipcap caption --method sbg``.
Heavy imports happen inside the functions, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "Selective Blind Guessing: caption from CLIP keywords, show keywords, import/check vocabularies"
DEFAULT_MODEL = "sbg-flickr"
DEMO_MODEL = "shapes-sbg"
PREFIX = "clipcap:"


def _eprint(*parts: object) -> None:
    print(PREFIX, *parts, file=sys.stderr)


# ------------------------------------------------------------------------------------------------ shared helpers
def add_sbg_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SBG model")
    g.add_argument("--model", "-m", help=f"registry SBG model (default {DEFAULT_MODEL}, falling back to the bundled "
                                         f"demo {DEMO_MODEL} when it is not installed)")
    g.add_argument("--generator", type=Path, help="a local generator folder (config.json + model.safetensors) "
                                                  "instead of a registry model")
    g.add_argument("--clip-model", help="open_clip model for --generator (e.g. ViT-L-14)")
    g.add_argument("--clip-pretrained", help="open_clip tag or CLIP weights file for --generator")
    g.add_argument("--vocabulary", help="natural, shapes, or a vocabulary JSON file (default: the model's)")
    g.add_argument("--tokenizer", help="generator tokenizer ('gpt2' or a path; default: the folder's own)")
    g.add_argument("--models-dir", type=Path, help="models folder (default: $CLIPCAP_MODELS_DIR or ~/.cache/clipcap)")
    g.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    g.add_argument("--dtype", choices=["fp32", "fp16", "bf16"])
    g.add_argument("--offline", action="store_true", help="never download (same as HF_HUB_OFFLINE=1)")


def add_sbg_generation_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SBG generation")
    g.add_argument("--top-k-candidates", "-k", type=int, default=5, help="candidates per image (paper: 1, 2, 5)")
    g.add_argument("--threshold", type=float, default=0.5, help="keyword probability mass (default 0.5)")
    g.add_argument("--max-keywords", type=int, default=16, help="cap on vocabulary keywords")
    g.add_argument("--decoding", choices=["sample", "beam", "greedy"], default=None,
                   help="default: sample (as the paper)")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=50, help="sampling top-k (50: the original's)")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-new-tokens", type=int, default=67)
    g.add_argument("--seed", type=int)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--rerank", choices=["clip", "clip+grammar", "none"], default=None,
                   help="how the best candidate is chosen (default: clip, as the paper)")
    g.add_argument("--grammar", type=Path, help="grammar head folder for --rerank clip+grammar")
    g.add_argument("--grammar-weight", type=float, default=1.0)


def load_guesser(args: argparse.Namespace):
    """The :class:`BlindGuesser` the arguments ask for (``--generator`` folder, ``--model``, or the default with the
    bundled demo as fallback). Works with the ``caption`` command's namespace too (``--checkpoint`` = generator)."""
    import os

    from ..errors import ClipCapError, MissingFileError
    from .guesser import BlindGuesser

    if getattr(args, "offline", False):
        os.environ["HF_HUB_OFFLINE"] = "1"
    common = dict(models_dir=getattr(args, "models_dir", None), device=getattr(args, "device", None),
                  dtype=getattr(args, "dtype", None))
    folder = getattr(args, "generator", None) or getattr(args, "checkpoint", None)
    if folder:
        if not getattr(args, "clip_model", None):
            raise ClipCapError("a generator folder needs --clip-model (ViT-L-14 for the published generator)")
        guesser = BlindGuesser.from_files(folder, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                                          vocabulary=getattr(args, "vocabulary", None) or "natural",
                                          tokenizer=getattr(args, "tokenizer", None), **common)
    elif getattr(args, "model", None):
        guesser = BlindGuesser.from_pretrained(args.model, **common)
    else:
        try:
            guesser = BlindGuesser.from_pretrained(DEFAULT_MODEL, **common)
        except MissingFileError as e:
            _eprint(f"the default SBG model '{DEFAULT_MODEL}' is not available here: {e}")
            _eprint(f"falling back to the bundled demo '{DEMO_MODEL}' (trained on synthetic shapes only)")
            guesser = BlindGuesser.from_pretrained(DEMO_MODEL, **common)
    if getattr(args, "vocabulary", None) and not folder:
        from .keywords import KeywordExtractor

        guesser.extractor = KeywordExtractor(guesser.clip, args.vocabulary, cache=guesser.extractor.cache)
    grammar = getattr(args, "grammar", None)
    if grammar:
        from ..scoring import attach_grammar

        attach_grammar(guesser, str(grammar), weight=getattr(args, "grammar_weight", None))
    return guesser


def sbg_caption_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments for :meth:`BlindGuesser.caption` from a namespace (``sbg caption`` or ``caption``)."""
    k = getattr(args, "top_k_candidates", None)
    if k is None:  # the caption command's --num-candidates, when it asks for several
        n = getattr(args, "num_candidates", None)
        k = n if n and n > 1 else 5
    decoding = getattr(args, "decoding", None) or "sample"
    if decoding == "greedy" and k > 1:
        k = 1
    return dict(top_k_candidates=k, threshold=getattr(args, "threshold", 0.5),
                max_keywords=getattr(args, "max_keywords", 16), decoding=decoding,
                temperature=getattr(args, "temperature", 1.0), top_k=getattr(args, "top_k", None) or 50,
                top_p=getattr(args, "top_p", 1.0), max_new_tokens=getattr(args, "max_new_tokens", 67),
                seed=getattr(args, "seed", None), banned_words=getattr(args, "ban", None) or (),
                rerank=getattr(args, "rerank", None) or "clip")


def _inputs(args: argparse.Namespace) -> list[str]:
    from ..cli import collect_images
    from ..registry import package_path

    inputs = args.inputs or [str(package_path("bundled:assets/samples"))]
    return [str(f) for f in collect_images(inputs, recursive=getattr(args, "recursive", False))]


# ----------------------------------------------------------------------------------------------- subcommands
def _caption(args: argparse.Namespace) -> int:
    files = _inputs(args)
    if not files:
        _eprint("no image files found")
        return 2
    guesser = load_guesser(args)
    _eprint(f"model: {guesser!r}")
    results = guesser.caption(files, batch_size=args.batch_size, **sbg_caption_kwargs(args))
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
    else:
        for r in results:
            if r.ok:
                print(f"{r.source}\t{r.text}")
                print(f"\t  keywords: {', '.join(r.keywords or [])}")
                for c in r.candidates:
                    g = f" grammar {c.grammar:.2f}" if c.grammar is not None else ""
                    print(f"\t  CLIP-S {c.clip_score:.3f}{g}  {c.text}")
    failed = [r for r in results if not r.ok]
    for r in failed:
        _eprint(f"failed: {r.error}")
    return 1 if failed else 0


def _keywords(args: argparse.Namespace) -> int:
    files = _inputs(args)
    guesser = load_guesser(args)
    kws = guesser.keywords(files, threshold=args.threshold, max_keywords=args.max_keywords)
    if args.json:
        print(json.dumps([{"source": f, "keywords": k} for f, k in zip(files, kws)], indent=2, ensure_ascii=False))
    else:
        for f, k in zip(files, kws):
            print(f"{f}\t{', '.join(k)}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from .importer import convert_original

    path, report = convert_original(args.encyclopedia, args.labels, args.out, name=args.name, limit=args.limit)
    _eprint(f"wrote {path}: {report.keywords} keywords; dropped {len(report.dropped)} noisy entries")
    for d in report.dropped[: args.show_dropped]:
        _eprint(f"  dropped {d}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from .vocabulary import load_vocabulary

    v = load_vocabulary(args.path)
    counts = ", ".join(f"{len(ws)} {pos}s" for pos, ws in v.keywords.items())
    levels = [lid for lid, _ in v.hierarchy.levels()] if v.hierarchy else []
    print(f"{v.name}: {counts}; hierarchy levels: {', '.join(levels) or 'none'}; content hash {v.content_hash[:16]}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="sbg_command", required=True)
    for name, help_, func in (("caption", "caption images by Selective Blind Guessing", _caption),
                              ("keywords", "show the CLIP keywords of images", _keywords)):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("inputs", nargs="*", help="image files or folders (default: the bundled samples)")
        sp.add_argument("--recursive", "-r", action="store_true")
        sp.add_argument("--json", action="store_true")
        add_sbg_model_arguments(sp)
        if name == "caption":
            add_sbg_generation_arguments(sp)
        else:
            sp.add_argument("--threshold", type=float, default=0.5)
            sp.add_argument("--max-keywords", type=int, default=16)
        sp.set_defaults(_sbg_run=func)
    sp = sub.add_parser("import-vocabulary", help="convert the original encyclopedia.pkl + all_labels.pkl to JSON "
                                                  "(read safely: no code in them can run)")
    sp.add_argument("encyclopedia", type=Path)
    sp.add_argument("labels", type=Path)
    sp.add_argument("--out", type=Path, required=True)
    sp.add_argument("--name", default="original")
    sp.add_argument("--limit", type=int, default=1000, help="keywords kept (the original used 1000)")
    sp.add_argument("--show-dropped", type=int, default=20)
    sp.set_defaults(_sbg_run=_import)
    sp = sub.add_parser("check-vocabulary", help="validate a vocabulary JSON file and summarise it")
    sp.add_argument("path")
    sp.set_defaults(_sbg_run=_check)


def run(args: argparse.Namespace) -> int:
    return int(args._sbg_run(args) or 0)
