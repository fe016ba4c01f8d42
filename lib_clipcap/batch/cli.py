"""``python -m lib_clipcap tag FOLDER... [options]``: caption a training set into sidecar files.

Progress (images/s, ETA) goes to stderr through tqdm; the result line ``written N, skipped N, failed N`` to stdout,
followed on stderr by every failed file with its reason. Exit status: 0 all files fine, 1 some failed, 2 bad usage
or a fatal error (lock held, model missing...), 130 stopped by Ctrl-C (press it once to stop after the current
batch, twice to abort at once; either way rerunning the command resumes).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, Callable, Optional

from ..cli import add_decoding_arguments, add_model_arguments, decoding_kwargs, eprint, load_captioner
from .options import DEFAULT_MAX_PIXELS, EXISTING_POLICIES

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
    g.add_argument("--dry-run", action="store_true", help="list what would be written; write nothing")
    g.add_argument("--no-resume", dest="resume", action="store_false",
                   help="ignore the journal of an earlier run and caption everything again")
    g = p.add_argument_group("caption text")
    g.add_argument("--existing", choices=EXISTING_POLICIES, default="skip",
                   help="when a caption file exists (default: skip)")
    g.add_argument("--separator", default=", ", help="joins prefix, caption, suffix and old text (default ', ')")
    g.add_argument("--prefix", default="", help="text before every caption, e.g. a trigger word")
    g.add_argument("--suffix", default="", help="text after every caption")
    g.add_argument("--lowercase", action="store_true", help="lower-case the generated caption")
    g.add_argument("--strip-period", action="store_true", help="remove the trailing period")
    g.add_argument("--max-length", type=int, help="cut captions to this many characters (at a word boundary)")
    g.add_argument("--replace", nargs=2, action="append", default=[], metavar=("FIND", "REPLACE"),
                   help="replace text in captions (repeatable, applied in order)")
    g.add_argument("--workers", type=int, help="image-decoding processes (default: 0 on CPU, up to 16 on a GPU)")
    add_model_arguments(p)
    add_decoding_arguments(p)


def options_from_args(args: argparse.Namespace):
    """:class:`~lib_clipcap.batch.TagOptions` from parsed arguments.

    Raises:
        OptionError: an invalid value (reported with exit status 2).
    """
    from .options import TagOptions

    kw = decoding_kwargs(args)
    return TagOptions(
        inputs=args.inputs, recursive=args.recursive, include=args.include, exclude=args.exclude,
        list_file=args.list_file, max_pixels=args.max_pixels, caption_ext=args.caption_ext, output_dir=args.output_dir,
        manifest_jsonl=args.manifest_jsonl, manifest_csv=args.manifest_csv, dry_run=args.dry_run, resume=args.resume,
        existing=args.existing, separator=args.separator, prefix=args.prefix, suffix=args.suffix,
        lowercase=args.lowercase, strip_period=args.strip_period, max_length=args.max_length,
        replace=[tuple(p) for p in args.replace], banned_words=kw.pop("banned_words"), batch_size=args.batch_size,
        workers=args.workers, **kw,
    )


class _Progress:
    """tqdm on stderr, created on the first update (when the total is known)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, done: int, total: int, path: str) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                            desc="clipcap: tagging")
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _StopOnCtrlC:
    """First Ctrl-C: stop after the current batch. Second: abort now (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Optional[Callable] = None

    def __enter__(self) -> "_StopOnCtrlC":
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


def run(args: argparse.Namespace) -> int:
    """Run the ``tag`` command; returns the exit status."""
    from .runner import run_tagging

    if not args.inputs and not args.list_file:
        eprint("give at least one folder or image, or --list FILE")
        return 2
    options = options_from_args(args)
    cap = load_captioner(args, allow_demo_fallback=False)  # never caption a training set with the toy model by accident
    eprint(f"model: {cap!r}")
    bar = _Progress()
    plan_lines = []

    def on_file(o) -> None:
        if options.dry_run:
            if o.status == "would_write":
                plan_lines.append(f"write ({o.reason})\t{o.output}\t<- {o.path}")
            elif o.status == "skipped":
                plan_lines.append(f"skip\t{o.path}\t({o.reason})")

    with _StopOnCtrlC() as stop:
        try:
            summary = run_tagging(options, cap, progress=None if options.dry_run else bar, should_stop=stop,
                                  on_file=on_file)
        finally:
            bar.close()
    for line in plan_lines:
        print(line)
    rate = f" ({summary.images_per_s:.2f} images/s)" if summary.images_per_s else ""
    print(f"{summary.line()} in {summary.elapsed_s:.1f} s{rate}")
    for f in summary.failures:
        eprint(f"failed: {f.path}: {f.reason}")
    if summary.stopped:
        eprint(f"stopped early: {summary.total - summary.written - summary.skipped - summary.failed} files left; "
               f"rerun the same command to resume")
        return 130
    return 1 if summary.failed else 0


if __name__ == "__main__":  # pragma: no cover
    from ..cli import main

    sys.exit(main(["tag", *sys.argv[1:]]))
