"""Planning a run before anything is decoded: where each caption goes, which files are already done (journal) or
kept (existing captions), which cannot be captioned at all (collisions, a folder in the way, outside the allowed
folders), and the clean-up of temporary files an interrupted run left behind."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import stale_temp_files
from .discover import Item, is_within
from .journal import Journal, sha256_bytes
from .options import FileOutcome, TagOptions
from .policy import own_part

log = logging.getLogger(__name__)


@dataclass
class Target:
    """One file a task writes: the caption file, or (``tags_file``) the separate ``.tags`` file."""

    output: Path
    content: str  # what the tool writes into it: caption / tags / caption+tags (TagOptions.outputs)
    action: str  # new / overwrite / append / prepend
    before: str | None = None  # SHA-256 of the file when planned (None: no file); rechecked when writing
    user: str | None = None  # append/prepend: the user's text kept beside the new text
    note: str = ""  # what the policy will do, for a dry run: "create", "replace own part (run ...)", "append"...
    tags_file: bool = False  # the separate .tags file (TagOptions.tags_file)


@dataclass
class Task:
    """One image that gets captioned, with everything the writer needs: the files it writes (:attr:`targets`, the
    caption file first) and, for a dry run, those of its files the policy keeps (:attr:`kept`)."""

    item: Item  # or any item with the same interface (path, root, rel, stat(), caption_path())
    journal: Journal | None
    size: int
    mtime_ns: int
    targets: list[Target]
    log: Any = None  # the output root's RunLog (lib_clipcap.batch.runs), None in a dry run
    kept: list[tuple[Path, str]] = field(default_factory=list)  # (file, why) of its files left as they are

    @property
    def output(self) -> Path:
        """The first file it writes (the caption file, or the ``.tags`` file when that is the only one)."""
        return self.targets[0].output

    @property
    def note(self) -> str:
        """What the policy does to its files, for a dry run (file names given when it has several)."""
        if len(self.targets) == 1 and not self.kept:
            return self.targets[0].note
        parts = [f"{t.output.name}: {t.note}" for t in self.targets]
        parts += [f"{path.name}: skip ({why})" for path, why in self.kept]
        return "; ".join(parts)

    def tags_target(self) -> Target | None:
        """The separate ``.tags`` file it writes (``tags_file``), if any."""
        return next((t for t in self.targets if t.tags_file), None)


def journal_root(item: Item, options: TagOptions) -> Path:
    """The output root of ``item``: the mirror folder, or the input folder it was found under."""
    return Path(os.path.abspath(options.output_dir)) if options.output_dir else item.root


class _Failed(Exception):
    """One file of an image cannot be written: the whole image fails, for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def plan_tasks(items: Sequence[Item], options: TagOptions, journals: dict[Path, Journal],
               allowed_roots: Sequence[Path] | None,
               histories: dict[Path, dict[str, list]] | None = None) -> tuple[list[Task], list[FileOutcome]]:
    """Decide, per image, before decoding anything: caption it (a task), skip it, or fail it.

    Each of an image's files (:meth:`TagOptions.outputs <lib_clipcap.batch.options.TagOptions.outputs>`: the caption
    file, and with ``tags_file`` the ``.tags`` file) is planned on its own -- journal, existing-caption policy, the
    tool's own earlier text -- and the image is captioned when one of them is to be written. A file that cannot be
    written at all (a collision, a folder in the way, unreadable, outside the allowed folders) fails the whole image:
    none of its files is written.

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
    outputs = options.outputs()
    tasks: list[Task] = []
    settled: list[FileOutcome] = []
    claimed: dict[str, str] = {}
    for item in items:
        path = os.fspath(item.path)
        files = [(item.caption_path(ext, out_dir), content) for ext, content in outputs]
        first = os.fspath(files[0][0])
        current = files[0][0]
        try:
            for current, _ in files:
                _check_place(item, current, path, claimed, allowed_roots)
            try:
                st = item.stat()
            except OSError as e:
                current = None
                raise _Failed(f"cannot read the file: {e.strerror or e}") from None
            root = journal_root(item, options)
            journal = journals[root]
            history = (histories or {}).get(root, {})
            targets: list[Target] = []
            kept: list[tuple[Path, str, str]] = []
            for current, content in files:
                target, why, category = _plan_file(current, content, st, journal, history, options)
                if target is None:
                    kept.append((current, why, category))
                else:
                    target.tags_file = options.tags_file and content == "tags"
                    targets.append(target)
        except _Failed as e:
            named = len(files) > 1 and current is not None  # which of its files is at fault
            settled.append(FileOutcome(path, "failed", first, f"{current.name}: {e.reason}" if named else e.reason))
            continue
        if not targets:
            category = "resumed" if all(c == "resumed" for *_, c in kept) else "policy"
            reason = kept[0][1] if len(kept) == 1 else "; ".join(f"{p.name}: {why}" for p, why, _ in kept)
            settled.append(FileOutcome(path, "skipped", first, reason, category=category))
            continue
        tasks.append(Task(item, journal, st.st_size, st.st_mtime_ns, targets,
                          kept=[(p, why) for p, why, _ in kept]))
    return tasks, settled


def _check_place(item: Item, output: Path, path: str, claimed: dict[str, str],
                 allowed_roots: Sequence[Path] | None) -> None:
    """Raise :class:`_Failed` when ``output`` cannot be one of the files of the image at ``path``."""
    out_s = os.fspath(output)
    real_out = os.path.realpath(output)
    if real_out == os.path.realpath(item.path):
        raise _Failed("its caption file would replace the image itself; choose another caption_ext")
    if real_out in claimed:
        raise _Failed(f"its caption file {out_s} is also the caption file of {claimed[real_out]} (same "
                                 f"name, different suffix); rename one of them")
    claimed[real_out] = path
    if allowed_roots is not None and not is_within(output, allowed_roots):
        raise _Failed(f"its caption file {out_s} resolves outside the allowed folders")
    if os.path.lexists(output) and os.path.isdir(output):
        raise _Failed(f"a folder is in the way of its caption file {out_s}")


def _plan_file(output: Path, content: str, st: os.stat_result, journal: Journal, history: dict[str, list],
               options: TagOptions) -> tuple[Target | None, str, str]:
    """One file of an image: ``(target to write, "", "")``, or ``(None, why it is kept, category)``.

    Raises:
        _Failed: the file cannot be read (the image fails).
    """
    if journal.is_done(output, st.st_size, st.st_mtime_ns):
        return None, f"already captioned by an earlier run (journal {journal.path.name})", "resumed"
    exists = os.path.lexists(output)
    if exists and options.existing == "skip":
        return None, "caption file exists (existing=skip)", "policy"
    if not exists:
        return Target(output, content, "new", note="create"), "", ""
    try:
        data = output.read_bytes()
    except OSError as e:
        raise _Failed(f"cannot read the existing caption file: {e.strerror or e}") from None
    before = sha256_bytes(data)
    if options.existing == "overwrite":
        return Target(output, content, "overwrite", before, note="overwrite (the old file is kept for --undo)"), "", ""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _Failed("the existing caption file is not UTF-8 text; fix it or use existing=overwrite") \
            from None
    user, why = own_part(text, before, history.get(journal.key(output), []), options)
    if user is None:
        return None, why, "policy"
    return Target(output, content, options.existing, before, user, why), "", ""


def remove_stale_temps(tasks: Sequence[Task], journals: Sequence[Journal]) -> None:
    """Delete temporary files that a killed earlier run left beside the captions we are about to write (and beside
    the journals).

    Safe because we hold the lock of every output root: no other run of ours is writing there.
    """
    by_dir: dict[Path, set] = {j.root: {j.path.name} for j in journals}
    for t in tasks:
        for target in t.targets:
            by_dir.setdefault(target.output.parent, set()).add(target.output.name)
    for folder, names in by_dir.items():
        for tmp in stale_temp_files(folder, names):
            try:
                tmp.unlink()
                log.info("removed %s, left by an interrupted run", tmp)
            except OSError as e:
                log.warning("cannot remove leftover temporary file %s: %s", tmp, e)
