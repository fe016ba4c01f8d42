"""Planning a run before anything is decoded: where each caption goes, which files are already done (journal) or
kept (existing captions), which cannot be captioned at all (collisions, a folder in the way, outside the allowed
folders), and the clean-up of temporary files an interrupted run left behind."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fileio import stale_temp_files
from .discover import Item, is_within
from .journal import Journal, sha256_bytes
from .options import FileOutcome, TagOptions
from .policy import own_part

log = logging.getLogger(__name__)


@dataclass
class Task:
    """One image that gets captioned, with everything the writer needs."""

    item: Item  # or any item with the same interface (path, root, rel, stat(), caption_path())
    output: Path
    journal: Journal | None
    size: int
    mtime_ns: int
    action: str  # new / overwrite / append / prepend
    before: str | None = None  # SHA-256 of the caption file when planned (None: no file); rechecked when writing
    user: str | None = None  # append/prepend: the user's text kept beside the new caption
    note: str = ""  # what the policy will do, for a dry run: "create", "replace own part (run ...)", "append"...
    log: Any = None  # the output root's RunLog (lib_clipcap.batch.runs), None in a dry run


def journal_root(item: Item, options: TagOptions) -> Path:
    """The output root of ``item``: the mirror folder, or the input folder it was found under."""
    return Path(os.path.abspath(options.output_dir)) if options.output_dir else item.root


def plan_tasks(items: Sequence[Item], options: TagOptions, journals: dict[Path, Journal],
               allowed_roots: Sequence[Path] | None,
               histories: dict[Path, dict[str, list]] | None = None) -> tuple[list[Task], list[FileOutcome]]:
    """Decide, per image, before decoding anything: caption it (a task), skip it, or fail it.

    Args:
        items: The images found: :class:`~lib_clipcap.batch.discover.Item` s, or items of another source with the
            same ``path``, ``stat()`` and ``caption_path()``.
        options: The run's options.
        journals: The journal of each output root (see :func:`journal_root`).
        allowed_roots: Where captions may be written (job manager), or ``None``.
        histories: Per output root, what earlier runs wrote per caption file (:meth:`StateFolder.history
            <lib_clipcap.batch.runs.StateFolder.history>`), so append/prepend replace the tool's own text.

    Returns:
        ``(tasks to caption, outcomes already settled: skipped or failed)``.
    """
    out_dir = Path(os.path.abspath(options.output_dir)) if options.output_dir else None
    tasks: list[Task] = []
    settled: list[FileOutcome] = []
    claimed: dict[str, str] = {}
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
        root = journal_root(item, options)
        journal = journals[root]
        if journal.is_done(output, st.st_size, st.st_mtime_ns):
            settled.append(FileOutcome(path, "skipped", out_s, f"already captioned by an earlier run (journal "
                                                               f"{journal.path.name})", category="resumed"))
            continue
        if exists and options.existing == "skip":
            settled.append(FileOutcome(path, "skipped", out_s, "caption file exists (existing=skip)",
                                       category="policy"))
            continue
        if not exists:
            tasks.append(Task(item, output, journal, st.st_size, st.st_mtime_ns, "new", note="create"))
            continue
        try:
            data = output.read_bytes()
        except OSError as e:
            fail(f"cannot read the existing caption file: {e.strerror or e}")
            continue
        before = sha256_bytes(data)
        if options.existing == "overwrite":
            tasks.append(Task(item, output, journal, st.st_size, st.st_mtime_ns, "overwrite", before,
                              note="overwrite (the old file is kept for --undo)"))
            continue
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            fail("the existing caption file is not UTF-8 text; fix it or use existing=overwrite")
            continue
        history = (histories or {}).get(root, {}).get(journal.key(output), [])
        user, why = own_part(text, before, history, options)
        if user is None:
            settled.append(FileOutcome(path, "skipped", out_s, why, category="policy"))
            continue
        tasks.append(Task(item, output, journal, st.st_size, st.st_mtime_ns, options.existing, before, user, why))
    return tasks, settled


def remove_stale_temps(tasks: Sequence[Task], journals: Sequence[Journal]) -> None:
    """Delete temporary files that a killed earlier run left beside the captions we are about to write (and beside
    the journals).

    Safe because we hold the lock of every output root: no other run of ours is writing there.
    """
    by_dir: dict[Path, set] = {j.root: {j.path.name} for j in journals}
    for t in tasks:
        by_dir.setdefault(t.output.parent, set()).add(t.output.name)
    for folder, names in by_dir.items():
        for tmp in stale_temp_files(folder, names):
            try:
                tmp.unlink()
                log.info("removed %s, left by an interrupted run", tmp)
            except OSError as e:
                log.warning("cannot remove leftover temporary file %s: %s", tmp, e)
