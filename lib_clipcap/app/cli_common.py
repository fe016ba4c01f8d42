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

from ..errors import ClipCapError

PREFIX = "clipcap:"


def eprint(*parts: object) -> None:
    print(PREFIX, *parts, file=sys.stderr)


# ------------------------------------------------------------------------------------------------ shared options
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", "-m", help="registry model name (see `models`); default: flickr8k, falling back to "
                                         "the bundled demo model when it is not available")
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


def add_decoding_arguments(p: argparse.ArgumentParser) -> None:
    """The decoding options. Each one not given stays ``None`` and takes the options table's default in
    :func:`decoding_kwargs` (the one set of defaults the library, the UIs, the API and the WebUI settings share), or
    the method's own (``--method sbg``: the SBG procedure)."""
    from ..options_table import defaults

    d = defaults()
    g = p.add_argument_group("decoding")
    g.add_argument("--decoding", choices=["greedy", "beam", "sample"], default=None,
                   help=f"default: {d['decoding']} (tag and eval: greedy; caption --method sbg: sample, as the SBG "
                        "procedure)")
    g.add_argument("--beam-size", type=int, help=f"beams per image in beam search (default {d['beam_size']}; SBG: k)")
    g.add_argument("--num-candidates", type=int,
                   help=f"captions per image (default {d['num_candidates']} in beam search and sampling, 1 with "
                        "greedy; --method sbg: the same as --top-k-candidates)")
    g.add_argument("--temperature", type=float, help=f"default {d['temperature']}")
    g.add_argument("--top-k", type=int,
                   help=f"sampling: keep the k likeliest tokens (default {d['top_k']}: off; SBG: 50)")
    g.add_argument("--top-p", type=float, help=f"default {d['top_p']}")
    g.add_argument("--repetition-penalty", type=float, help=f"default {d['repetition_penalty']}")
    g.add_argument("--no-repeat-ngram-size", type=int, help=f"default {d['no_repeat_ngram_size']}")
    g.add_argument("--max-new-tokens", type=int, help=f"default {d['max_new_tokens']} (SBG: 67)")
    g.add_argument("--min-new-tokens", type=int, help=f"default {d['min_new_tokens']}")
    g.add_argument("--seed", type=int)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--ban", action="append", default=[], metavar="WORD", help="a word the caption must not contain")


def decoding_kwargs(args: argparse.Namespace, *, decoding: str | None = None) -> dict:
    """:meth:`Captioner.caption` keywords from :func:`add_decoding_arguments`' options.

    An option not given takes the options table's default; ``--num-candidates`` not given is 1 with greedy decoding.

    Args:
        args: Parsed arguments.
        decoding: This command's mode when ``--decoding`` is not given (default: the table's).
    """
    from ..options_table import default_num_candidates, defaults

    d = defaults()
    mode = args.decoding or decoding or d["decoding"]
    pick = lambda name: d[name] if getattr(args, name) is None else getattr(args, name)  # noqa: E731
    n = args.num_candidates if args.num_candidates is not None else default_num_candidates(mode, pick("beam_size"))
    return dict(decoding=mode, beam_size=pick("beam_size"), num_candidates=n, temperature=pick("temperature"),
                top_k=pick("top_k"), top_p=pick("top_p"), repetition_penalty=pick("repetition_penalty"),
                no_repeat_ngram_size=pick("no_repeat_ngram_size"), max_new_tokens=pick("max_new_tokens"),
                min_new_tokens=pick("min_new_tokens"), seed=args.seed, banned_words=args.ban)


def load_captioner(args: argparse.Namespace, *, allow_demo_fallback: bool = True):
    """The captioner the parsed arguments ask for (:func:`lib_clipcap.loading.load_captioner`; notices on stderr)."""
    from ..loading import load_captioner as load

    return load(model=args.model, checkpoint=args.checkpoint, clip_model=args.clip_model,
                clip_pretrained=args.clip_pretrained, tokenizer=args.tokenizer, gpt2=args.gpt2,
                normalize=args.normalize, models_dir=args.models_dir, device=args.device, dtype=args.dtype,
                offline=bool(args.offline), allow_demo_fallback=allow_demo_fallback, notify=eprint)


def collect_images(inputs: list[str], *, recursive: bool) -> list[Path]:
    """Files given directly, plus image files inside given folders (sorted, optionally recursive)."""
    from ..images import is_image_path

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
        from ..registry import BUNDLED_PREFIX, package_path

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
        from ..registry import BUNDLED_PREFIX, package_path
        from ..scoring import attach_grammar

        spec = str(grammar)
        if spec == "bundled":
            from ..grammar import bundled_grammar_for

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
