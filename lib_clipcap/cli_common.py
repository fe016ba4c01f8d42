"""What every ``python -m lib_clipcap`` subcommand shares: the model and decoding options, the re-ranking options,
loading the captioner, finding images, printing results, and the ``clipcap:`` message prefix.

The subcommand modules (``caption`` in :mod:`lib_clipcap.app.cli`, ``tag``, ``eval``, ``review``, the SBG options...)
import from here and :mod:`lib_clipcap.app.cli` only assembles them, so no module imports the one that imports it.
Importing it is cheap (``--help`` stays torch-free).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ClipCapError

PREFIX = "clipcap:"


def eprint(*parts: object) -> None:
    print(PREFIX, *parts, file=sys.stderr)


# ------------------------------------------------------------------------------------------------ shared options
def add_model_arguments(p: argparse.ArgumentParser, *, demo_fallback: bool = True) -> None:
    """The model options. ``demo_fallback``: whether this command falls back to the demo model when the default one
    is missing (``tag`` does not: it exits 2), so ``--help`` says what the command really does."""
    g = p.add_argument_group("model")
    fallback = (", falling back to the bundled demo model when it is not available" if demo_fallback else
                "; when it is not available the command stops (exit status 2) instead of using the demo model")
    g.add_argument("--model", "-m", help=f"registry model name (see `models`); default: flickr8k{fallback}")
    g.add_argument("--checkpoint", help="a local checkpoint instead of a registry model")
    g.add_argument("--clip-model", help="open_clip model name for --checkpoint (e.g. ViT-B-32)")
    g.add_argument("--clip-pretrained", help="open_clip pretrained tag or a local CLIP weights file")
    g.add_argument("--tokenizer", help="'gpt2' (default), a tokenizer folder or tokenizer.json")
    g.add_argument("--gpt2", help="GPT-2 base for checkpoints without GPT-2 weights ('gpt2' or a folder)")
    g.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="L2-normalise CLIP features before the mapper (default: from the checkpoint)")
    add_placement_arguments(g)


def add_placement_arguments(g) -> None:
    """Where models live and run: ``--models-dir``, ``--device``, ``--dtype``, ``--offline`` (``caption``, ``tag``,
    ``eval``, ``serve``...)."""
    g.add_argument("--models-dir", type=Path, help="models folder (default: $CLIPCAP_MODELS_DIR or ~/.cache/clipcap)")
    g.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    g.add_argument("--dtype", choices=["fp32", "fp16", "bf16", "int8"],
                   help="default: fp16 on GPU, fp32 on CPU; int8: GPT-2 weights in int8 on the CPU (faster single "
                        "captions)")
    g.add_argument("--offline", action="store_true", help="never download (same as HF_HUB_OFFLINE=1)")


#: What a decoding option's ``--help`` adds to the table's help and default.
_NOTES = {"num_candidates": "1 with greedy decoding"}
#: ... and where ``--method sbg`` (the SBG procedure's defaults) differs.
_SBG_NOTES = {"beam_size": "SBG: at least k", "num_candidates": "SBG: k, the same as --top-k-candidates"}


def add_decoding_arguments(p: argparse.ArgumentParser, *, method_defaults: dict | None = None,
                           mode_note: str | None = None, sbg_notes: bool = True) -> None:
    """A ``--<name>`` option for each decoding setting of the options table (:func:`decoding_keys`, with its help,
    type and choices; ``banned_words`` is ``--ban WORD``, repeatable), plus ``--batch-size``.

    Each one not given stays ``None`` and takes its default in :func:`decoding_kwargs`: the command's
    ``method_defaults`` (``tag`` decodes greedily, ``sbg caption`` with the SBG procedure's), else the table's, the
    one set the library, the UIs, the API and the WebUI settings share.

    Args:
        p: The (sub)command's parser.
        method_defaults: This command's defaults over the table's (shown as the defaults).
        mode_note: What the help of ``--decoding`` adds (e.g. the mode of another method of the command).
        sbg_notes: Show the SBG procedure's defaults where they differ (commands that can run SBG and ClipCap).
    """
    from .options_table import OPTIONS
    from .sbg.defaults import DECODING_DEFAULTS as SBG

    g = p.add_argument_group("decoding")
    for o in OPTIONS:
        if o.group != "decoding":
            continue
        if o.type is list:  # banned_words: one word per --ban, as the other list options of the command line
            g.add_argument("--ban", action="append", default=[], metavar="WORD",
                           help="a word the caption must not contain (repeat for more words)")
            continue
        default = (method_defaults or {}).get(o.key, o.ui_value(o.default))
        notes = [f"default {default}" if default is not None else "default: k"]
        if o.key == "decoding" and mode_note:
            notes.append(mode_note)
        if o.key in _NOTES:
            notes.append(_NOTES[o.key])
        if sbg_notes and o.key in _SBG_NOTES:
            notes.append(_SBG_NOTES[o.key])
        elif sbg_notes and o.key != "decoding" and SBG.get(o.key) not in (None, o.default):
            notes.append(f"SBG: {SBG[o.key]}")
        g.add_argument("--" + o.key.replace("_", "-"), type=o.type, default=None,
                       choices=list(o.choices) if o.choices else None,
                       help=f"{o.help} ({'; '.join(notes)})".replace("%", "%%"))
    g.add_argument("--batch-size", type=int, default=16, help="images per model call (default 16)")


def decoding_kwargs(args: argparse.Namespace, *, method_defaults: dict | None = None) -> dict:
    """Resolved decoding settings (:func:`lib_clipcap.options_table.resolve_decoding`) from
    :func:`add_decoding_arguments`' options, for :meth:`Captioner.caption` or a batch run's options.

    Args:
        args: Parsed arguments (a namespace without some of the options leaves them at their defaults).
        method_defaults: This command's defaults over the table's, as given to :func:`add_decoding_arguments`
            (``tag``: greedy; SBG: :data:`lib_clipcap.sbg.defaults.DECODING_DEFAULTS`).

    Raises:
        ClipCapError: a bad value; the message names the option as typed and the value.
    """
    from .options_table import OptionError, decoding_keys, resolve_decoding

    given = {k: getattr(args, k, None) for k in decoding_keys() if k != "banned_words"}
    given["banned_words"] = getattr(args, "ban", None) or None
    try:
        return resolve_decoding(given, method_defaults=method_defaults)
    except OptionError as e:
        raise as_flag_error(e) from None


def as_flag_error(e) -> ClipCapError:
    """An :class:`~lib_clipcap.options_table.OptionError` reworded with the option as the user typed it
    (``--num-candidates 8: cannot exceed ...``; ``banned_words`` is ``--ban``)."""
    flag = "--ban" if e.field == "banned_words" else "--" + e.field.replace("_", "-")
    return ClipCapError(f"{flag} {e.value}: {e.reason}")


def load_captioner(args: argparse.Namespace, *, allow_demo_fallback: bool = True):
    """The captioner the parsed arguments ask for (:func:`lib_clipcap.loading.load_captioner`; notices on stderr)."""
    from .loading import load_captioner as load

    return load(model=args.model, checkpoint=args.checkpoint, clip_model=args.clip_model,
                clip_pretrained=args.clip_pretrained, tokenizer=args.tokenizer, gpt2=args.gpt2,
                normalize=args.normalize, models_dir=args.models_dir, device=args.device, dtype=args.dtype,
                offline=bool(args.offline), allow_demo_fallback=allow_demo_fallback, notify=eprint)


def collect_images(inputs: list[str], *, recursive: bool) -> list[Path]:
    """Files given directly, plus image files inside given folders (sorted, optionally recursive)."""
    from .images import is_image_path

    out: list[Path] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir():
            it = p.rglob("*") if recursive else p.glob("*")
            out.extend(sorted(f for f in it if f.is_file() and is_image_path(f)))
        else:
            out.append(p)  # a missing or non-image file is reported per file by the captioner
    return out


# ------------------------------------------------------------------------------------------- re-ranking options
def add_rerank_arguments(g) -> None:
    """``--grammar`` and ``--grammar-weight`` (for ``--rerank clip+grammar``) on a parser or argument group."""
    g.add_argument("--grammar", metavar="PATH_OR_NAME",
                   help="grammar head for --rerank clip+grammar (implies it): a folder (or its grammar.safetensors) "
                        "from `python -m lib_clipcap train grammar`, bundled:<path>, or 'bundled' (the head shipped "
                        "for the model's CLIP; what clip+grammar uses when --grammar is not given)")
    g.add_argument("--grammar-weight", type=float, metavar="W",
                   help="clip+grammar ranks by CLIP-S + W x P(grammatical) (default 1.0; implies clip+grammar)")


def check_rerank_args(args: argparse.Namespace, *, default: str) -> str:
    """Check ``--rerank``/``--grammar``/``--grammar-weight``, fill ``args.rerank`` (``default`` when not given, or
    ``clip+grammar`` when a grammar option is) and return it.

    Raises:
        ClipCapError: a bad value or a contradiction; the message names the option, the value and what to do.
    """
    import math

    grammar = getattr(args, "grammar", None)
    weight = getattr(args, "grammar_weight", None)
    given = [o for o, v in (("--grammar", grammar), ("--grammar-weight", weight)) if v is not None]
    if args.rerank is None:
        args.rerank = "clip+grammar" if given else default
    elif given and args.rerank != "clip+grammar":
        raise ClipCapError(f"{given[0]} only applies to --rerank clip+grammar, but --rerank is {args.rerank!r}; "
                           f"use --rerank clip+grammar, or drop {' and '.join(given)}")
    if weight is not None and not (math.isfinite(weight) and weight >= 0):
        raise ClipCapError(f"--grammar-weight {weight}: must be a number >= 0 (0: CLIP-S alone; default 1.0)")
    if grammar is not None and str(grammar) != "bundled":
        from .registry import BUNDLED_PREFIX, package_path

        spec = str(grammar)
        path = package_path(spec) if spec.startswith(BUNDLED_PREFIX) else Path(spec).expanduser()
        if not path.exists():
            raise ClipCapError(
                f"--grammar {spec!r}: nothing at {path}. Give the folder of a grammar head (grammar.safetensors + "
                f"grammar.json, written by `python -m lib_clipcap train grammar --out DIR`) or its "
                f"grammar.safetensors, or 'bundled' for the head shipped for the model's CLIP")
    return args.rerank


def attach_grammar_args(owner, args: argparse.Namespace) -> None:
    """Attach what ``--grammar``/``--grammar-weight`` ask for to a captioner or blind guesser (after
    :func:`check_rerank_args`)."""
    grammar = getattr(args, "grammar", None)
    weight = getattr(args, "grammar_weight", None)
    if grammar is not None:
        from .registry import BUNDLED_PREFIX, package_path
        from .scoring import attach_grammar

        spec = str(grammar)
        if spec == "bundled":
            from .grammar import bundled_grammar_for

            head = bundled_grammar_for(owner.clip)
            if head is None:
                raise ClipCapError(
                    f"--grammar bundled: no grammar head is bundled for CLIP {owner.clip.name!r}. Train one "
                    f"(`python -m lib_clipcap train grammar --clip-model ... --captions captions.txt --out DIR`) "
                    f"and pass --grammar DIR, or use --rerank clip")
            attach_grammar(owner, head)
        else:
            path = package_path(spec) if spec.startswith(BUNDLED_PREFIX) else Path(spec).expanduser()
            attach_grammar(owner, str(path))
    if weight is not None:
        owner.grammar_weight = float(weight)


# ------------------------------------------------------------------------------------------------------ output
def describe_result(r, *, candidates: bool) -> list[str]:
    """The detail lines printed under a result's caption: SBG keywords, the chosen caption's CLIP-S (and grammar),
    and with ``candidates`` every candidate with its scores (``*`` marks the chosen one)."""
    lines = []
    if r.keywords is not None:
        lines.append(f"keywords: {', '.join(r.keywords)}")
    chosen = r.chosen
    if chosen is not None and chosen.clip_score is not None:
        g = f"  grammar {chosen.grammar:.2f}" if chosen.grammar is not None else ""
        lines.append(f"CLIP-S {chosen.clip_score:.3f}{g}")
    if candidates:
        for c in r.candidates:
            scores = f"log-p {c.score:+.3f}"
            if c.clip_score is not None:
                scores += f"  CLIP-S {c.clip_score:.3f}"
            if c.grammar is not None:
                scores += f"  grammar {c.grammar:.2f}"
            lines.append(f"{'*' if c is chosen else ' '} {scores}  {c.text}")
    return lines


def print_results(results, *, as_json: bool, candidates: bool = False) -> int:
    """Print caption results and report the failed inputs on stderr; return the exit status (1: some failed).

    ``as_json``: one JSON array of :meth:`CaptionResult.to_dict` (keywords, the chosen caption's ``clip_score`` and
    every candidate with its scores included). Otherwise one ``source<TAB>caption`` line per input, followed by
    indented detail lines (:func:`describe_result`).
    """
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
    else:
        for r in results:
            if r.ok:
                print(f"{r.source}\t{r.text}")
                for line in describe_result(r, candidates=candidates):
                    print(f"\t  {line}")
    failed = [r for r in results if not r.ok]
    for r in failed:
        eprint(f"failed: {r.error}")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------------- commands
