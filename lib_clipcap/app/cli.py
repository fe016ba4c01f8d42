"""Command line: ``python -m lib_clipcap caption|inspect|convert|models ...``.

Each subcommand is a ``(add_arguments, run)`` pair; heavy imports happen inside ``run`` so ``--help`` is instant.
Exit codes: 0 success, 1 some inputs failed (the rest were processed), 2 bad usage or a fatal error (message on
stderr, prefixed ``clipcap:``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from ..cli_common import (  # noqa: F401  (re-exported: their home before cli_common)
    PREFIX,
    add_decoding_arguments,
    add_model_arguments,
    add_rerank_arguments,
    as_flag_error,
    attach_grammar_args,
    check_rerank_args,
    collect_images,
    decoding_kwargs,
    describe_result,
    eprint,
    load_captioner,
    print_results,
)
from ..errors import ClipCapError

log = logging.getLogger("lib_clipcap")


def _caption_args(p: argparse.ArgumentParser) -> None:
    from ..sbg.cli import add_sbg_procedure_arguments

    p.add_argument("inputs", nargs="*", help="image files or folders (default: the bundled sample images)")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    p.add_argument("--json", action="store_true", help="print one JSON array with every result")
    p.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                   help="print every candidate with its scores (and debug logging)")
    p.add_argument("--method", choices=["clipcap", "sbg"], default="clipcap",
                   help="clipcap: CLIP-prefix captioning; sbg: Selective Blind Guessing (keywords -> caption)")
    add_model_arguments(p)
    add_decoding_arguments(p, mode_note="--method sbg: sample, as the SBG procedure")
    g = p.add_argument_group("re-ranking")
    g.add_argument("--rerank", choices=["none", "clip", "clip+grammar"], default=None,
                   help="re-rank the candidates by CLIP-S (optionally with the grammar head); default: none for "
                        "clipcap, clip for sbg")
    add_rerank_arguments(g)
    add_prompt_arguments(p.add_argument_group("prompt (the caption plus CLIP-ranked modifiers)"))
    add_sbg_procedure_arguments(p.add_argument_group("SBG (--method sbg)"))


def add_prompt_arguments(g) -> None:
    """``--prompt-style`` and ``--prompt-max-tokens``: the options table's ``prompt`` rows, with their help."""
    from ..options_table import get_option

    style, budget = get_option("prompt_style"), get_option("prompt_max_tokens")
    g.add_argument("--prompt-style", choices=list(style.choices or ()), default=None,
                   help=f"{style.help} (default {style.default}; --json adds each modifier with its score and the "
                        f"negative prompt)")
    g.add_argument("--prompt-max-tokens", type=int, default=None, metavar="N",
                   help=f"{budget.help} (default {budget.default}; with --prompt-style fast or best)"
                   .replace("%", "%%"))


def prompt_args(args: argparse.Namespace) -> tuple[str, dict]:
    """``(style, prompt settings)`` of ``--prompt-style``/``--prompt-max-tokens``, checked.

    Raises:
        ClipCapError: a bad value, or a prompt option that does not apply; the message names the option as typed.
    """
    from ..options_table import OptionError, prompt_settings

    given = {"prompt_style": getattr(args, "prompt_style", None),
             "prompt_max_tokens": getattr(args, "prompt_max_tokens", None)}
    try:
        style, settings = prompt_settings({k: v for k, v in given.items() if v is not None})
    except OptionError as e:
        raise as_flag_error(e) from None
    if style == "sentence" and given["prompt_max_tokens"] is not None:
        raise ClipCapError(f"--prompt-max-tokens {given['prompt_max_tokens']} only applies to --prompt-style fast "
                           f"or best; add --prompt-style fast (or best), or drop --prompt-max-tokens")
    if style != "sentence" and getattr(args, "method", "clipcap") == "sbg":
        raise ClipCapError(f"--prompt-style {style} applies to --method clipcap only; drop --method sbg or "
                           f"--prompt-style")
    return style, settings


def check_caption_args(args: argparse.Namespace) -> None:
    """Check the ``caption`` options that the model does not check itself, before any model is loaded.

    Raises:
        ClipCapError: an option that does not apply to the method, a bad value or a contradiction; the message names
            the option and value and says what to do.
    """
    prompt_args(args)
    if args.method == "sbg":
        from ..sbg.cli import check_sbg_args

        check_sbg_args(args)
        check_rerank_args(args, default="clip")
        return
    sbg_only = [("--top-k-candidates", "top_k_candidates"), ("--threshold", "threshold"),
                ("--max-keywords", "max_keywords"), ("--vocabulary", "vocabulary")]
    for option, name in sbg_only:
        if getattr(args, name, None) is not None:
            hint = " (for ClipCap, --num-candidates sets the candidates)" if name == "top_k_candidates" else ""
            raise ClipCapError(f"{option} {getattr(args, name)} only applies to --method sbg{hint}; add --method "
                               f"sbg or drop {option}")
    from ..options_table import OptionError, check_decoding

    try:  # the rules between settings (candidates and beams), before any model is loaded
        check_decoding(decoding_kwargs(args))
    except OptionError as e:
        raise as_flag_error(e) from None
    check_rerank_args(args, default="none")


def clipcap_caption_kwargs(args: argparse.Namespace) -> dict:
    """:meth:`Captioner.caption` keywords for the ``caption`` command: the options given, else the options table's
    defaults (as :meth:`Captioner.caption` itself)."""
    kw = decoding_kwargs(args)
    kw["rerank"] = args.rerank or "none"
    return kw


def _caption(args: argparse.Namespace) -> int:
    from ..registry import package_path

    check_caption_args(args)
    inputs = args.inputs
    if not inputs:
        inputs = [str(package_path("bundled:assets/samples"))]
        eprint(f"no images given: captioning the bundled samples in {inputs[0]}")
    files = collect_images(inputs, recursive=args.recursive)
    if not files:
        eprint(f"no image files found in {', '.join(inputs)}")
        return 2
    # options are checked before a model is loaded
    if args.method == "sbg":
        from ..sbg.cli import load_guesser, sbg_caption_kwargs

        kwargs = sbg_caption_kwargs(args)
        cap = load_guesser(args)
    else:
        kwargs = clipcap_caption_kwargs(args)
        cap = load_captioner(args)
        attach_grammar_args(cap, args)
    eprint(f"model: {cap!r}")
    style, prompt = prompt_args(args)
    if style != "sentence":
        from ..tags.cache import default_cache_dir
        from ..tags.prompt import prompt_images

        rerank = kwargs.pop("rerank", None)
        pairs = prompt_images(cap, [str(f) for f in files], style, batch_size=args.batch_size, rerank=rerank,
                              decoding=kwargs, cache=default_cache_dir(args.models_dir), **prompt)
        return print_prompts(pairs, as_json=args.json)
    results = cap.caption([str(f) for f in files], batch_size=args.batch_size, **kwargs)
    asked = max(args.num_candidates or 1, getattr(args, "top_k_candidates", None) or 1)
    return print_results(results, as_json=args.json, candidates=asked > 1 or getattr(args, "verbose", False))


def print_prompts(pairs: list, *, as_json: bool) -> int:
    """Print ``(CaptionResult, PromptResult)`` pairs; return the exit status (1: some inputs failed).

    ``as_json``: one JSON array of each result's :meth:`CaptionResult.to_dict` with ``"prompt"``:
    :meth:`PromptResult.to_dict` (the modifiers with their scores, the negative prompt). Otherwise one
    ``source<TAB>prompt`` line per input, then the caption, the modifiers with their scores, the negative prompt and
    the prompt's CLIP-S, indented.
    """
    if as_json:
        rows = []
        for r, p in pairs:
            d = r.to_dict()
            d["prompt"] = p.to_dict() if p is not None else None
            rows.append(d)
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for r, p in pairs:
            if r.ok and p is not None:
                print(f"{r.source}\t{p.text}")
                print(f"\t  caption: {p.caption}")
                mods = ", ".join(f"{m.tag} ({m.category} {m.score:.2f})" for m in p.modifiers) or "none"
                print(f"\t  modifiers: {mods}")
                if p.negative:
                    print(f"\t  negative: {p.negative}")
                print(f"\t  CLIP-S {p.clip_s:.3f}  {p.tokens} tokens  ({p.style})")
    failed = [r for r, _ in pairs if not r.ok]
    for r in failed:
        eprint(f"failed: {r.error}")
    return 1 if failed else 0


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="checkpoint file (.pt, .pth, .bin, .safetensors)")
    p.add_argument("--json", action="store_true")


def _inspect(args: argparse.Namespace) -> int:
    from ..checkpoint import inspect_summary

    summary = inspect_summary(args.path)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for k, v in summary.items():
            print(f"{k:>16}: {v}")
    return 0


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="checkpoint to convert")
    p.add_argument("dst", help="output .safetensors path (a .json config is written beside it)")
    p.add_argument("--clip-model", help="record the CLIP backbone in the config (e.g. ViT-L-14)")
    p.add_argument("--clip-pretrained", help="record the CLIP pretrained tag (e.g. openai)")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--tokenizer", help="record the tokenizer ('gpt2' or a path)")


def _convert(args: argparse.Namespace) -> int:
    from ..checkpoint import convert_checkpoint

    cfg = convert_checkpoint(args.src, args.dst, overrides={
        "clip_model": args.clip_model, "clip_pretrained": args.clip_pretrained,
        "normalize": args.normalize, "tokenizer": args.tokenizer})
    eprint(f"wrote {args.dst} ({cfg.mapping}, prefix {cfg.prefix_length}, GPT-2 weights: {cfg.has_gpt_weights})")
    return 0


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    p.add_argument("--models-dir", type=Path)


def installed_path(entry, models_dir: Path | None = None) -> Path | None:
    """Where a registry model's files are (an SBG generator folder, else the checkpoint), or None if not installed.
    Never downloads, and imports no torch."""
    from .. import hub

    try:
        return hub.resolve_model_files(entry, models_dir=models_dir, download=False, progress=False)
    except ClipCapError:
        return None


def _models(args: argparse.Namespace) -> int:
    from ..registry import get_model, list_models

    rows = []
    for name in list_models():
        e = get_model(name)
        path = installed_path(e, args.models_dir)
        installed = str(path) if path is not None else None
        rows.append({"name": e.name, "kind": e.kind, "source": e.source.type, "clip": f"{e.clip.model}/{e.clip.pretrained}",
                     "installed": installed, "description": e.description})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            mark = "installed" if r["installed"] else f"not installed ({r['source']})"
            print(f"{r['name']:<22} {r['kind']:<8} {r['clip']:<34} {mark}")
    return 0


COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "caption": ("caption images or folders", _caption_args, _caption),
    "inspect": ("show a checkpoint's inferred architecture", _inspect_args, _inspect),
    "convert": ("convert a checkpoint to .safetensors + JSON config", _convert_args, _convert),
    "models": ("list known models and whether they are installed", _models_args, _models),
}


# Commands that live with their feature: each module defines HELP, add_arguments(parser) and run(args) -> int.
# Only the chosen command's module is imported when it runs; --help imports each (they must import cheaply).
COMMAND_MODULES: dict[str, str] = {
    "tag": "lib_clipcap.batch.cli",
    "serve": "lib_clipcap.app.server",
    "train": "lib_clipcap.train.cli",
    "eval": "lib_clipcap.eval.cli",
    "sbg": "lib_clipcap.sbg.cli",
    "review": "lib_clipcap.review.cli",
}


def _module_commands() -> dict[str, tuple[str, Callable, Callable]]:
    import importlib

    found = {}
    for name, module in COMMAND_MODULES.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):  # the feature is not part of this build
                continue
            raise
        found[name] = (mod.HELP, mod.add_arguments, mod.run)
    return found


def all_commands() -> dict[str, tuple[str, Callable, Callable]]:
    return {**COMMANDS, **_module_commands()}


def build_parser(commands: dict | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_clipcap", description="CLIP-prefix image captioning")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_, add_args, _) in (commands or all_commands()).items():
        add_args(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv: list[str] | None = None) -> int:
    commands = all_commands()
    args = build_parser(commands).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return commands[args.command][2](args)
    except ClipCapError as e:
        eprint(e)
        return 2
    except KeyboardInterrupt:
        eprint("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
