"""Planning a run before anything is decoded: where each caption goes, which files are already done (journal) or
kept (existing captions), which cannot be captioned at all (collisions, a folder in the way, outside the allowed
folders), and the clean-up of temporary files an interrupted run left behind."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..fileio import stale_temp_files
from .discover import Item, is_within
from .journal import Journal
from .options import FileOutcome, TagOptions

log = logging.getLogger(__name__)


@dataclass
class Task:
    """One image that gets captioned, with everything the writer needs."""

    item: Item  # or any item with the same interface (path, root, rel, stat(), caption_path())
    output: Path
    journal: Optional[Journal]
    size: int
    mtime_ns: int
    action: str  # new / overwrite / append / prepend


def journal_root(item: Item, options: TagOptions) -> Path:
    """The output root of ``item``: the mirror folder, or the input folder it was found under."""
    return Path(os.path.abspath(options.output_dir)) if options.output_dir else item.root


def plan_tasks(items: Sequence[Item], options: TagOptions, journals: Dict[Path, Journal],
          allowed_roots: Optional[Sequence[Path]]) -> tuple[List[Task], List[FileOutcome]]:
    """Decide, per image, before decoding anything: caption it (a task), skip it, or fail it.

    Args:
        items: The images found: :class:`~lib_clipcap.batch.discover.Item` s, or items of another source with the
            same ``path``, ``stat()`` and ``caption_path()``.
        options: The run's options.
        journals: The journal of each output root (see :func:`journal_root`).
        allowed_roots: Where captions may be written (job manager), or ``None``.

    Returns:
        ``(tasks to caption, outcomes already settled: skipped or failed)``.
    """
    out_dir = Path(os.path.abspath(options.output_dir)) if options.output_dir else None
    tasks: List[Task] = []
    settled: List[FileOutcome] = []
    claimed: Dict[str, str] = {}
    for item in items:
        path = os.fspath(item.path)
        output = item.caption_path(options.caption_ext, out_dir)
        out_s = os.fspath(output)

        def fail(reason: str) -> None:
            settled.append(FileOutcome(path, "failed", out_s, reason))

        real_out = os.path.realpath(output)
        if real_out == os.path.realpath(item.path):
            fail("its caption file would replace the image itself; choose another caption_ext")
            continue
        if real_out in claimed:
            fail(f"its caption file {out_s} is also the caption file of {claimed[real_out]} (same name, different "
                 f"suffix); rename one of them")
            continue
        claimed[real_out] = path
        if allowed_roots is not None and not is_within(output, allowed_roots):
            fail(f"its caption file {out_s} resolves outside the allowed folders")
            continue
        try:
            st = item.stat()
        except OSError as e:
            fail(f"cannot read the file: {e.strerror or e}")
            continue
        exists = os.path.lexists(output)
        if exists and os.path.isdir(output):
            fail(f"a folder is in the way of its caption file {out_s}")
            continue
        journal = journals[journal_root(item, options)]
        if journal.is_done(output, st.st_size, st.st_mtime_ns):
            settled.append(FileOutcome(path, "skipped", out_s, f"already captioned by an earlier run (journal "
                                                               f"{journal.path.name})"))
            continue
        if exists and options.existing == "skip":
            settled.append(FileOutcome(path, "skipped", out_s, "caption file exists (existing=skip)"))
            continue
        action = options.existing if exists else "new"
        tasks.append(Task(item, output, journal, st.st_size, st.st_mtime_ns, action))
    return tasks, settled


def remove_stale_temps(tasks: Sequence[Task], journals: Sequence[Journal]) -> None:
    """Delete temporary files that a killed earlier run left beside the captions we are about to write (and beside
    the journals).

    Safe because we hold the lock of every output root: no other run of ours is writing there.
    """
    by_dir: Dict[Path, set] = {j.root: {j.path.name} for j in journals}
    for t in tasks:
        by_dir.setdefault(t.output.parent, set()).add(t.output.name)
    for folder, names in by_dir.items():
        for tmp in stale_temp_files(folder, names):
            try:
                tmp.unlink()
                log.info("removed %s, left by an interrupted run", tmp)
            except OSError as e:
                log.warning("cannot remove leftover temporary file %s: %s", tmp, e)
