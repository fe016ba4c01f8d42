"""``python -m lib_clipcap tag FOLDER... [options]``: caption a training set into sidecar files.

Progress (images/s, ETA, counting only the files being captioned) goes to stderr through tqdm; the result line
``written N, already done (resume) N, had a caption (policy) N, failed N`` to stdout, followed on stderr by every
failed file with its reason. Every run that writes is recorded in the folder's ``.clipcap`` state folder:
``tag --runs DIR`` lists the runs, ``tag --undo DIR [RUN]`` takes one back (:mod:`lib_clipcap.batch.runs`).
Exit status: 0 all files fine, 1 some failed, 2 bad usage
or a fatal error (lock held, model missing...), 130 stopped by Ctrl-C (press it once to stop after the current
batch, twice to abort at once; either way rerunning the command resumes).

``--engine ray`` runs the captioning on a Ray cluster (:mod:`lib_clipcap.distributed`; needs ``ray[data]``) with the
same options, outputs, resume and report; it adds ``--address``, placement options and a Parquet manifest.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..cli_common import add_decoding_arguments, add_model_arguments, decoding_kwargs, eprint, load_captioner
from ..tags.selection import DEFAULT_THRESHOLD
from .options import CONTENTS, DEFAULT_MAX_PIXELS, EXISTING_POLICIES, TAG_DECODING_DEFAULTS

HELP = "caption folders of images into .txt sidecar files (training sets), resumably"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``tag`` command's arguments to ``p``."""
    p.add_argument("inputs", nargs="*", metavar="FOLDER", help="folders (searched recursively) or image files")
    g = p.add_argument_group("inputs")
    g.add_argument("--no-recursive", dest="recursive", action="store_false", help="do not descend into sub-folders")
    g.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="only files matching this glob (name or path relative to the folder; repeatable)")
    g.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="leave out matching files")
    g.add_argument("--list", dest="list_file", metavar="FILE", help="a text file listing images, one per line")
    g.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="fail images larger than this many pixels")
    g = p.add_argument_group("outputs")
    g.add_argument("--ext", dest="caption_ext", default=".txt", help="caption file suffix (default .txt)")
    g.add_argument("--output-dir", help="write captions under this folder, mirroring the input layout")
    g.add_argument("--manifest-jsonl", metavar="FILE", help="also append a JSONL row per file")
    g.add_argument("--manifest-csv", metavar="FILE", help="also append a CSV row per file")
    g.add_argument("--dry-run", action="store_true",
                   help="say per file what the policy would do (create / replace own part / append / skip, and "
                        "why); loads no model, writes nothing")
    g.add_argument("--preview", type=int, metavar="N",
                   help="caption the first N files to be written and print the exact text each would get; writes "
                        "nothing")
    g.add_argument("--keep-runs", type=int, default=20, metavar="N",
                   help="run records and backups kept per folder for --undo (default 20; older ones are dropped, "
                        "and the run says which)")
    g = p.add_argument_group("runs and undo (instead of tagging)")
    g.add_argument("--runs", metavar="DIR", help="list the runs recorded for DIR (the folder tagged, or its "
                                                 "--output-dir) and exit")
    g.add_argument("--undo", nargs="+", metavar=("DIR", "RUN"),
                   help="undo run RUN in DIR (default: its newest run not undone): restore every caption file it "
                        "changed, remove the ones it created; files changed since are left alone and reported")
    g.add_argument("--no-resume", dest="resume", action="store_false",
                   help="ignore the journal of an earlier run and caption everything again")
    g = p.add_argument_group("caption text")
    g.add_argument("--existing", choices=EXISTING_POLICIES, default="skip",
                   help="when a caption file exists (default: skip)")
    g.add_argument("--separator", default=", ", help="joins prefix, caption, suffix and old text (default ', ')")
    g.add_argument("--prefix", default="", help="text before every generated caption (with --existing append it "
                                                "sits mid-file: use --trigger for words that must come first)")
    g.add_argument("--trigger", dest="triggers", action="append", default=[], metavar="WORD",
                   help="a trigger word, always the first segment of the file whatever --existing says, never twice "
                        "(repeatable; kohya keep_tokens / shuffle_caption sets)")
    g.add_argument("--suffix", default="", help="text after every caption")
    g.add_argument("--multiline", action="store_true",
                   help="allow line breaks in --prefix/--suffix/--separator (refused otherwise)")
    g.add_argument("--lowercase", action="store_true", help="lower-case the generated caption")
    g.add_argument("--strip-period", action="store_true", help="remove the trailing period")
    g.add_argument("--max-length", type=int, help="cut captions to this many characters (at a word boundary)")
    g.add_argument("--replace", nargs=2, action="append", default=[], metavar=("FIND", "REPLACE"),
                   help="replace text in captions (repeatable, applied in order)")
    g.add_argument("--workers", type=int, help="image-decoding processes (default: 0 on CPU, up to 16 on a GPU)")
    g = p.add_argument_group("content: a caption, CLIP-ranked tags, or both (lib_clipcap.tags)")
    g.add_argument("--content", choices=CONTENTS, default="caption",
                   help="what the tool writes: the caption (default), kohya-style tags ('red, triangle, white "
                        "background'), or the caption then the tags; policies, triggers and undo apply alike")
    g.add_argument("--tag-vocabulary", action="append", default=[], metavar="NAME_OR_FILE",
                   help="tag vocabulary: a bundled name (general, subject, colour, material, setting, lighting, "
                        "composition, medium, style, shapes, sbg-natural) or a .txt/.json file; repeat to merge "
                        "(default: general)")
    g.add_argument("--tag-threshold", type=float, metavar="P",
                   help=f"least score a tag needs (default {DEFAULT_THRESHOLD}: its share of its category)")
    g.add_argument("--tag-scoring", choices=["probability", "cosine"], default="probability",
                   help="probability: share of the tag's category (default); cosine: raw CLIP cosine (give "
                        "--tag-threshold)")
    g.add_argument("--tag-max", type=int, metavar="N", help="at most N tags per image (default: no limit)")
    g.add_argument("--tag-limit", action="append", default=[], metavar="CATEGORY=N",
                   help="at most N tags of CATEGORY (repeatable): --tag-limit colour=2")
    g.add_argument("--tag-exclude", action="append", default=[], metavar="TAG", help="never write TAG (repeatable)")
    g.add_argument("--tag-always-first", action="append", default=[], metavar="TAG",
                   help="when chosen, TAG goes first, after the trigger words (repeatable, in order)")
    g.add_argument("--tag-replace", nargs=2, action="append", default=[], metavar=("TAG", "NEW"),
                   help="write NEW instead of TAG ('' drops TAG; repeatable)")
    g.add_argument("--tag-style", choices=["space", "underscore"], default="space",
                   help="space: 'white background' (default); underscore: 'white_background'")
    g.add_argument("--tag-order", choices=["score", "category"], default="score",
                   help="tags by score (default) or by the vocabulary's category order")
    g.add_argument("--tags-file", action="store_true",
                   help="write the tags to their own <image>.tags file: with --content caption+tags the caption "
                        "file gets the sentence and the .tags file the tags; with --content tags only the .tags file "
                        "is written (policies, triggers, resume and undo apply to each file)")
    add_model_arguments(p, demo_fallback=False)  # tag never falls back to the toy model (exit status 2)
    add_decoding_arguments(p, method_defaults=TAG_DECODING_DEFAULTS, mode_note="one deterministic caption per file, "
                           "the same however files are batched, so an interrupted run resumes identically")
    g = p.add_argument_group("engine (--engine ray: Ray Data on many GPUs / machines; pip install \"ray[data]\")")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: a Ray cluster (decode tasks + one model per actor)")
    g.add_argument("--address", help="Ray cluster: 'auto', HOST:PORT of the head, or ray://HOST:10001 (default: "
                                     "start a private Ray on this machine with all its GPUs and cores)")
    g.add_argument("--actors", type=int, help="captioning actors, one model each (default: one per GPU, else "
                                              "half the cluster's CPUs)")
    g.add_argument("--gpus-per-actor", type=float, help="GPUs per actor (default 1 when the cluster has GPUs)")
    g.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs reserved per actor (default 1)")
    g.add_argument("--memory-per-actor", type=int, metavar="BYTES",
                   help="host memory reserved per actor (about one loaded model; default: none)")
    g.add_argument("--decode-cpus", type=float, default=1.0, help="CPUs per decode task (default 1)")
    g.add_argument("--manifest-parquet", metavar="DIR", help="also write every row as Parquet part files in DIR")
    g.add_argument("--no-sidecars", dest="sidecars", action="store_false",
                   help="write no caption files, only the manifests (needs --manifest-parquet, which is then "
                        "the resume record)")
    g.add_argument("--no-ray-progress", dest="ray_progress", action="store_false",
                   help="hide Ray Data's own progress bars")


def options_from_args(args: argparse.Namespace):
    """:class:`~lib_clipcap.batch.TagOptions` from parsed arguments.

    Raises:
        OptionError: an invalid value (reported with exit status 2).
    """
    from .options import TagOptions

    kw = decoding_kwargs(args, method_defaults=TAG_DECODING_DEFAULTS)
    return TagOptions(
        inputs=args.inputs, recursive=args.recursive, include=args.include, exclude=args.exclude,
        list_file=args.list_file, max_pixels=args.max_pixels, caption_ext=args.caption_ext, output_dir=args.output_dir,
        manifest_jsonl=args.manifest_jsonl, manifest_csv=args.manifest_csv, dry_run=args.dry_run, resume=args.resume,
        existing=args.existing, separator=args.separator, prefix=args.prefix, suffix=args.suffix,
        triggers=args.triggers, preview=args.preview, keep_runs=args.keep_runs,
        multiline=args.multiline, lowercase=args.lowercase, strip_period=args.strip_period, max_length=args.max_length,
        replace=[tuple(p) for p in args.replace], banned_words=kw.pop("banned_words"), batch_size=args.batch_size,
        workers=args.workers, content=args.content, tag_vocabulary=args.tag_vocabulary,
        tag_threshold=args.tag_threshold, tag_scoring=args.tag_scoring, tag_max=args.tag_max,
        tag_category_limits=_category_limits(args.tag_limit), tag_exclude=args.tag_exclude,
        tag_always_first=args.tag_always_first, tag_replacements=dict(tuple(p) for p in args.tag_replace),
        tag_style=args.tag_style, tag_order=args.tag_order, tags_file=args.tags_file, **kw,
    )


def _category_limits(items: list[str]) -> dict[str, int]:
    """``["colour=2", ...]`` -> ``{"colour": 2}``.

    Raises:
        OptionError: an item is not ``CATEGORY=N`` with N a whole number (named as ``--tag-limit``).
    """
    from ..options_table import OptionError

    out: dict[str, int] = {}
    for item in items:
        cat, eq, n = item.partition("=")
        if not eq or not cat.strip() or not n.strip().isdigit():
            raise OptionError("tag_category_limits", item, "give CATEGORY=N with N a whole number, e.g. colour=2")
        out[cat.strip()] = int(n)
    return out


class _Progress:
    """tqdm on stderr over the files being captioned only (a resumed run's bar starts at 0 of what is left, so its
    rate and ETA are the real ones), created when captioning starts."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, p: Any) -> None:
        if not p.to_process:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=p.to_process, unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                            desc="clipcap: tagging")
        self.bar.update(p.processed - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _StopOnCtrlC:
    """First Ctrl-C: stop after the current batch. Second: abort now (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Callable | None = None

    def __enter__(self) -> _StopOnCtrlC:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        eprint("stopping after the current batch (Ctrl-C again to abort now); rerun the same command to resume")

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def __call__(self) -> bool:
        return self.requested


def ray_options_from_args(args: argparse.Namespace):
    """:class:`~lib_clipcap.distributed.RayOptions` from parsed arguments (no Ray import).

    Raises:
        OptionError: an invalid value.
    """
    from ..distributed.options import RayOptions

    return RayOptions(address=args.address, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                      cpus_per_actor=args.cpus_per_actor, memory_per_actor=args.memory_per_actor,
                      decode_cpus=args.decode_cpus, manifest_parquet=args.manifest_parquet, sidecars=args.sidecars,
                      progress_bars=args.ray_progress)


def _check_engine_args(args: argparse.Namespace) -> str | None:
    """A usage error message for Ray-only options given to the local engine, else ``None``."""
    if args.engine == "ray":
        return None
    ray_only = [("--address", args.address is not None), ("--actors", args.actors is not None),
                ("--gpus-per-actor", args.gpus_per_actor is not None), ("--cpus-per-actor", args.cpus_per_actor != 1.0),
                ("--memory-per-actor", args.memory_per_actor is not None),
                ("--decode-cpus", args.decode_cpus != 1.0), ("--manifest-parquet", args.manifest_parquet is not None),
                ("--no-sidecars", not args.sidecars)]
    given = [name for name, on in ray_only if on]
    if given:
        return f"{', '.join(given)} only apply to --engine ray; add --engine ray or drop them"
    return None


# TagOptions fields whose flag is not simply "--" + the field with dashes (errors name the flag the user typed).
_FLAGS = {"inputs": "FOLDER", "caption_ext": "--ext", "list_file": "--list", "recursive": "--no-recursive",
          "resume": "--no-resume", "banned_words": "--ban", "triggers": "--trigger",
          "tag_category_limits": "--tag-limit", "tag_replacements": "--tag-replace"}


def flag_for(field: str) -> str:
    """The command-line flag of a :class:`~lib_clipcap.batch.TagOptions` field (``manifest_csv`` ->
    ``--manifest-csv``, ``caption_ext`` -> ``--ext``)."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def run(args: argparse.Namespace) -> int:
    """Run the ``tag`` command; returns the exit status."""
    from ..options_table import OptionError

    try:
        return _run(args)
    except OptionError as e:  # name the flag as typed, not the API field: "--manifest-csv '.bashrc' is invalid: ..."
        reason = e.reason.replace("set multiline", "add --multiline")  # the option's name here is its flag
        eprint(f"{flag_for(e.field)} {e.value!r} is invalid: {reason}")
        return 2


def _run(args: argparse.Namespace) -> int:
    from .runner import run_tagging

    if args.runs is not None or args.undo is not None:
        return _runs_or_undo(args)
    if not args.inputs and not args.list_file:
        eprint("give at least one folder or image, or --list FILE")
        return 2
    problem = _check_engine_args(args)
    if problem:
        eprint(problem)
        return 2
    options = options_from_args(args)
    # A dry run's plan needs no model (loading one takes ~25 s), only its name, for the journal.
    if options.dry_run and args.engine == "local":
        name = _model_name(args)
        eprint(f"dry run: nothing is loaded or written (model {name})")
        return _run_and_report(options, lambda progress, stop, on_file: run_tagging(
            options, None, on_file=on_file, model_name=name))
    if args.engine == "ray":
        return _run_ray(args, options)
    cap = load_captioner(args, allow_demo_fallback=False)  # never caption a training set with the toy model by accident
    eprint(f"model: {cap!r}")

    def tag(progress, stop, on_file):
        return run_tagging(options, cap, on_progress=progress, should_stop=stop, on_file=on_file)

    return _run_and_report(options, tag)


def _model_name(args: argparse.Namespace) -> str:
    """The name a loaded model would have (what journals are keyed by), without loading it."""
    from pathlib import Path

    from ..registry import DEFAULT_MODEL

    if getattr(args, "checkpoint", None):
        return Path(args.checkpoint).stem
    return args.model or DEFAULT_MODEL


def _runs_or_undo(args: argparse.Namespace) -> int:
    """``--runs DIR`` / ``--undo DIR [RUN]``."""
    from .errors import BatchError
    from .runs import describe_runs, list_runs, undo_run

    if args.runs is not None and args.undo is not None:
        eprint("give --runs DIR or --undo DIR [RUN], not both")
        return 2
    if args.inputs:
        eprint(f"--runs and --undo take their folder themselves; drop {' '.join(args.inputs)}")
        return 2
    try:
        if args.runs is not None:
            runs = list_runs(args.runs)
            if not runs:
                print(f"no runs recorded in {args.runs}")
            for line in describe_runs(runs):
                print(line)
            return 0
        if len(args.undo) > 2:
            eprint(f"--undo takes a folder and at most one run id; got {' '.join(args.undo)}")
            return 2
        report = undo_run(args.undo[0], args.undo[1] if len(args.undo) > 1 else None)
    except BatchError as e:
        eprint(str(e))
        return 2
    print(report.line())
    for r in report.refused:
        eprint(f"refused: {r['path']}: {r['reason']}")
    if not report.complete:
        eprint("fix or restore the refused files by hand, then rerun the same --undo to finish")
        return 1
    return 0


def _run_ray(args: argparse.Namespace, options) -> int:
    from ..distributed import ModelSpec, require_ray

    ray_options = ray_options_from_args(args)
    require_ray()  # a clear "pip install" message before anything else
    from ..distributed.engine import run_tagging_ray

    spec = ModelSpec.from_args(args)
    eprint(f"engine: ray ({ray_options.address or 'private Ray on this machine'}); model: {spec.describe()}")

    def tag(progress, stop, on_file):
        return run_tagging_ray(options, spec, ray_options, on_progress=progress, should_stop=stop, on_file=on_file)

    return _run_and_report(options, tag)


def _run_and_report(options, tag: Callable) -> int:
    """Run ``tag(progress, should_stop, on_file)`` under Ctrl-C handling and print the report (both engines)."""
    bar = _Progress()
    plan_lines = []

    def on_file(o) -> None:
        if options.dry_run:
            if o.status == "would_write":
                plan_lines.append(f"{o.reason}\t{o.output}\t<- {o.path}")
            elif o.status == "skipped":
                plan_lines.append(f"skip\t{o.path}\t({o.reason})")
        elif options.preview and o.status == "would_write":
            plan_lines.append(f"{o.output} ({o.reason}):\n{o.text}\n")
            if o.tags_text is not None:
                plan_lines.append(f"{o.tags_output}:\n{o.tags_text}\n")

    with _StopOnCtrlC() as stop:
        try:
            summary = tag(None if options.dry_run else bar, stop, on_file)
        finally:
            bar.close()
    for line in plan_lines:
        print(line)
    rate = f" ({summary.images_per_s:.2f} images/s)" if summary.images_per_s else ""
    print(f"{summary.line()} in {summary.elapsed_s:.1f} s{rate}")
    for root, run_id in summary.run_ids.items():
        eprint(f"run {run_id} recorded in {root}; undo it with: tag --undo {root} {run_id}")
    if summary.pruned_runs:
        eprint(f"dropped the records and backups of {len(summary.pruned_runs)} older run(s), which can no longer be "
               f"undone (--keep-runs {options.keep_runs}): {', '.join(summary.pruned_runs)}")
    for f in summary.failures:
        eprint(f"failed: {f.path}: {f.reason}")
    if summary.stopped:
        eprint(f"stopped early: {summary.total - summary.written - summary.skipped - summary.failed} files left; "
               f"rerun the same command to resume")
        return 130
    return 1 if summary.failed else 0


if __name__ == "__main__":  # pragma: no cover
    from ..app.cli import main

    sys.exit(main(["tag", *sys.argv[1:]]))
