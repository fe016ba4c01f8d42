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


def add_sbg_procedure_arguments(g, *, k: bool = True, vocabulary: bool = True) -> None:
    """The SBG procedure's own options (keywords and k); not set (None) means the procedure's default."""
    from .defaults import DEFAULT_CANDIDATES, DEFAULT_MAX_KEYWORDS, DEFAULT_THRESHOLD

    if k:
        g.add_argument("--top-k-candidates", "-k", type=int, metavar="K",
                       help=f"candidates generated per image, CLIP picks the best (default {DEFAULT_CANDIDATES}; "
                            f"paper: 1, 2, 5)")
    g.add_argument("--threshold", type=float,
                   help=f"keywords are taken until their probability mass passes this (0-1, default "
                        f"{DEFAULT_THRESHOLD})")
    g.add_argument("--max-keywords", type=int, help=f"cap on vocabulary keywords (default {DEFAULT_MAX_KEYWORDS})")
    if vocabulary:
        g.add_argument("--vocabulary", help="keyword vocabulary: natural, shapes, or a vocabulary JSON file "
                                            "(default: the model's)")


def add_sbg_generation_arguments(p: argparse.ArgumentParser) -> None:
    """``sbg caption``'s options: the procedure's (k, keywords), re-ranking, and the decoding options every
    captioning command has, with the procedure's defaults."""
    from ..cli_common import add_decoding_arguments, add_rerank_arguments
    from .defaults import DECODING_DEFAULTS

    g = p.add_argument_group("SBG procedure")
    add_sbg_procedure_arguments(g, vocabulary=False)
    g.add_argument("--rerank", choices=["clip", "clip+grammar", "none"], default=None,
                   help="how the best candidate is chosen (default: clip, as the paper)")
    add_rerank_arguments(g)
    add_decoding_arguments(p, method_defaults=DECODING_DEFAULTS, mode_note="as the paper", sbg_notes=False)


def check_sbg_args(args: argparse.Namespace) -> None:
    """Check the SBG procedure's options of a namespace (``sbg caption|keywords`` or ``caption --method sbg``)
    before any model is loaded.

    Raises:
        ClipCapError: a bad value or a contradiction; the message names the option and value and says what to do.
    """
    import math

    from ..errors import ClipCapError, MissingFileError
    from .defaults import DEFAULT_CANDIDATES, DEFAULT_MAX_KEYWORDS, DEFAULT_THRESHOLD

    k, n = getattr(args, "top_k_candidates", None), getattr(args, "num_candidates", None)
    for option, value in (("--top-k-candidates", k), ("--num-candidates", n)):
        if value is not None and value < 1:
            raise ClipCapError(f"{option} {value}: must be >= 1 (candidates generated per image; the SBG procedure "
                               f"uses {DEFAULT_CANDIDATES})")
    if k is not None and n is not None and k != n:
        raise ClipCapError(f"--top-k-candidates {k} and --num-candidates {n} disagree: for --method sbg they are the "
                           f"same setting; give only one of them")
    asked = k if k is not None else n
    if getattr(args, "decoding", None) == "greedy" and asked is not None and asked > 1:
        raise ClipCapError(f"--decoding greedy gives one caption, not {asked} candidates: use --decoding sample (the "
                           f"SBG procedure) or --decoding beam, or -k 1")
    t = getattr(args, "threshold", None)
    if t is not None and not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise ClipCapError(f"--threshold {t}: must be between 0 and 1 (the probability mass the keywords must "
                           f"pass; default {DEFAULT_THRESHOLD})")
    m = getattr(args, "max_keywords", None)
    if m is not None and m < 1:
        raise ClipCapError(f"--max-keywords {m}: must be >= 1 (default {DEFAULT_MAX_KEYWORDS})")
    v = getattr(args, "vocabulary", None)
    if v is not None:
        from .vocabulary import BUILTIN, load_vocabulary

        try:
            load_vocabulary(v)
        except MissingFileError:
            raise ClipCapError(f"--vocabulary {v!r}: neither a built-in vocabulary ({', '.join(BUILTIN)}) nor an "
                               f"existing file; give one of those names or the path of a vocabulary JSON file") \
                from None
        except ClipCapError as e:
            raise ClipCapError(f"--vocabulary {v!r} is not a valid vocabulary: {e} (`python -m lib_clipcap sbg "
                               f"check-vocabulary FILE` checks a file)") from e


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
    from ..cli_common import attach_grammar_args

    attach_grammar_args(guesser, args)
    return guesser


def _keyword_kwargs(args: argparse.Namespace) -> dict:
    from .defaults import DEFAULT_MAX_KEYWORDS, DEFAULT_THRESHOLD

    t, m = getattr(args, "threshold", None), getattr(args, "max_keywords", None)
    return dict(threshold=DEFAULT_THRESHOLD if t is None else t, max_keywords=DEFAULT_MAX_KEYWORDS if m is None else m)


def sbg_caption_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments for :meth:`BlindGuesser.caption` from a namespace (``sbg caption`` or ``caption``).

    What the namespace leaves unset (None or absent) takes the SBG procedure's default (:mod:`.defaults`: k = 5
    candidates sampled with top-k 50, CLIP re-ranking); what it sets wins. ``--top-k-candidates`` is k, passed as
    ``num_candidates``. Check the namespace with :func:`check_sbg_args` first.
    """
    from ..cli_common import decoding_kwargs
    from .defaults import DECODING_DEFAULTS, DEFAULT_RERANK

    k = getattr(args, "top_k_candidates", None)
    if k is not None and getattr(args, "num_candidates", None) is None:
        args = argparse.Namespace(**{**vars(args), "num_candidates": k})
    kw = decoding_kwargs(args, method_defaults=DECODING_DEFAULTS)
    return dict(kw, **_keyword_kwargs(args), rerank=getattr(args, "rerank", None) or DEFAULT_RERANK)


def _inputs(args: argparse.Namespace) -> list[str]:
    from ..cli_common import collect_images
    from ..registry import package_path

    inputs = args.inputs or [str(package_path("bundled:assets/samples"))]
    return [str(f) for f in collect_images(inputs, recursive=getattr(args, "recursive", False))]


# ----------------------------------------------------------------------------------------------- subcommands
def _caption(args: argparse.Namespace) -> int:
    from ..cli_common import check_rerank_args, print_results
    from .defaults import DEFAULT_RERANK

    check_sbg_args(args)
    check_rerank_args(args, default=DEFAULT_RERANK)
    files = _inputs(args)
    if not files:
        _eprint("no image files found")
        return 2
    kwargs = sbg_caption_kwargs(args)  # checked before the model is loaded
    guesser = load_guesser(args)
    _eprint(f"model: {guesser!r}")
    results = guesser.caption(files, batch_size=args.batch_size, **kwargs)
    return print_results(results, as_json=args.json, candidates=True)


def _keywords(args: argparse.Namespace) -> int:
    check_sbg_args(args)
    files = _inputs(args)
    guesser = load_guesser(args)
    kws = guesser.keywords(files, **_keyword_kwargs(args))
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
            add_sbg_procedure_arguments(sp, k=False, vocabulary=False)
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
