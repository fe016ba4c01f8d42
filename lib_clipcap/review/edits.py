"""Saving reviewed captions: atomic writes through batch tagging's writer and journal, an undo log, bulk edits.

A save goes exactly the way a ``tag`` run writes (:mod:`lib_clipcap.batch.runner`): under the output root's lock
(so it cannot interleave with a running batch job), the journal records the new content's hash first (fsynced), then
the files are written through the batch writer (temporary file, fsync, rename): a crash at any point leaves each
caption with its old or its complete new text, never a partial one. The journal record also means that resuming an
interrupted ``tag`` run with the same settings treats an edited caption as finished and does not overwrite it.

Before any file changes, the old bytes of every file of the save are appended (fsynced) to the undo log
``.clipcap-review-undo.jsonl`` in the output root, one line per save, so :func:`undo_last` can restore them, even in
a later session. Undo restores a file only if it still holds what the save wrote; a file changed since is left alone
and reported.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..batch.discover import check_allowed, is_within
from ..batch.journal import JOURNAL_NAME, Journal, sha256_bytes
from ..batch.lock import LOCK_NAME, FolderLock
from ..errors import ClipCapError
from ..fileio import atomic_write_bytes, stale_temp_files
from ..textrules import UserPattern
from .flags import check_caption_text, decode_caption
from .table import ReviewRow, ReviewTable

log = logging.getLogger(__name__)

__all__ = ["UNDO_NAME", "EditOutcome", "ReviewEditError", "UnknownImageError", "plan_bulk", "plan_tags",
           "save_captions", "undo_depth", "undo_last"]

UNDO_NAME = ".clipcap-review-undo.jsonl"
#: Journal signature used when a folder has no batch journal yet (a later ``tag`` run starts its own).
REVIEW_SIGNATURE = "review"


class ReviewEditError(ClipCapError, ValueError):
    """An edit that cannot be made as asked (e.g. the same image twice in one save)."""


class UnknownImageError(ReviewEditError, KeyError):
    """An edit names an image that is not in the reviewed folder."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass
class EditOutcome:
    """What happened to one caption file: ``saved``, ``unchanged``, ``restored``, ``removed``, ``conflict`` or
    ``failed`` (with ``reason``)."""

    image: str
    caption_file: str
    status: str
    reason: str = ""
    text: str | None = None


def table_root(table: ReviewTable) -> Path:
    """The output root of a review table (where its journal, lock, undo log and feature cache are)."""
    return Path(os.path.abspath(os.path.expanduser(table.output_dir or table.folder)))


def _journal_signature(root: Path) -> str:
    # Append under the existing journal's signature so a resumed `tag` run sees the edit as finished; a journal we
    # cannot read is left for `tag` to replace.
    try:
        with open(root / JOURNAL_NAME, "rb") as f:
            header = json.loads(f.readline() or b"{}")
        sig = header.get("signature")
        return sig if isinstance(sig, str) and sig else REVIEW_SIGNATURE
    except (OSError, ValueError, AttributeError):
        return REVIEW_SIGNATURE


def _append_line(path: Path, record: dict[str, Any]) -> None:
    data = (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_undo(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    groups = []
    for line in raw.split(b"\n"):
        try:
            g = json.loads(line)
        except ValueError:
            continue  # a line torn by a power loss
        if isinstance(g, dict) and isinstance(g.get("edits"), list):
            groups.append(g)
    return groups


def _check_own_files(root: Path, allowed_roots: Sequence[Path] | None) -> None:
    """The undo log, journal and lock of ``root`` are read and written too: the path rule applies to them as to
    captions (a symlink planted in their place must not lead a save outside the allowed folders)."""
    for name, what in ((UNDO_NAME, "undo log"), (JOURNAL_NAME, "journal"), (LOCK_NAME, "lock file")):
        check_allowed(root / name, allowed_roots, what)


def undo_depth(table: ReviewTable) -> int:
    """How many saves :func:`undo_last` can still undo in this table's output root."""
    return len(_read_undo(table_root(table) / UNDO_NAME))


def _journal_records(journal: Journal, root: Path, pairs: Sequence[tuple[ReviewRow, bytes]]) -> list[dict[str, Any]]:
    records = []
    for row, data in pairs:
        try:
            st = os.stat(row.image)
        except OSError:
            continue  # the image is gone: nothing for a tag run to resume; the caption is still written
        records.append({"out": journal.key(Path(row.caption_file)), "image": row.rel, "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns, "sha256": sha256_bytes(data)})
    return records


def _write(root: Path, pairs: Sequence[tuple[ReviewRow, bytes]]) -> list[OSError | None]:
    """Journal (fsynced), then the batch writer's atomic writes, as a tag run does. Caller holds the lock."""
    from ..batch.runner import write_files

    journal = Journal(root, _journal_signature(root)).load()
    journal.open()
    try:
        journal.append(_journal_records(journal, root, pairs))
    finally:
        journal.close()
    return write_files([(Path(row.caption_file), data) for row, data in pairs])


def _rows_for(table: ReviewTable, edits: Sequence[tuple[str, str]]) -> list[tuple[ReviewRow, str]]:
    out = []
    seen = set()
    for image, text in edits:
        try:
            row = table.row(os.fspath(image))
        except KeyError:
            raise UnknownImageError(f"{image} is not an image of the reviewed folder {table.folder}; rescan the "
                                    f"folder or pick an image from the table") from None
        if row.image in seen:
            raise ReviewEditError(f"{image} is edited twice in one save; give each image once")
        seen.add(row.image)
        out.append((row, check_caption_text(text)))
    return out


def _remove_stale_temps(rows: Sequence[ReviewRow]) -> None:
    """Delete temporary files a killed earlier save (or tag run) left beside these captions; we hold the lock."""
    by_dir: dict[Path, set] = {}
    for row in rows:
        p = Path(row.caption_file)
        by_dir.setdefault(p.parent, set()).add(p.name)
    for folder, names in by_dir.items():
        for tmp in stale_temp_files(folder, names):
            try:
                tmp.unlink()
            except OSError as e:
                log.warning("cannot remove leftover temporary file %s: %s", tmp, e)


def save_captions(table: ReviewTable, edits: Sequence[tuple[str, str]], *,
                  allowed_roots: Sequence[Path] | None = None) -> list[EditOutcome]:
    """Write new caption texts atomically (journal, batch writer), recording the old ones for :func:`undo_last`.

    Args:
        table: The scanned folder the images belong to (its rows are updated: text, flags; scores cleared).
        edits: ``(image path, new caption)`` pairs. The caption is written as given (UTF-8, no newline added).
        allowed_roots: Real paths of the folders a server may write (``None``: anywhere).

    Returns:
        One :class:`EditOutcome` per edit: ``saved``, ``unchanged`` (the file already held that text) or ``failed``.

    Raises:
        CaptionTextError: a caption holds a control character (newline included) or cannot be encoded; nothing is
            written then.
        UnknownImageError: an image is not in ``table``.
        ReviewEditError: an image given twice.
        PathNotAllowedError: a caption file (or the folder's undo log, journal or lock) resolves outside
            ``allowed_roots``.
        BatchLockedError: a batch run holds the folder's lock (try again when it has finished).
    """
    pairs = _rows_for(table, edits)
    root = table_root(table)
    for row, _ in pairs:  # the batch rule and message (PathNotAllowedError: a PermissionError)
        check_allowed(row.caption_file, allowed_roots, "caption file")
    _check_own_files(root, allowed_roots)
    outcomes: dict[str, EditOutcome] = {}
    todo: list[tuple[ReviewRow, bytes, bytes | None]] = []
    root.mkdir(parents=True, exist_ok=True)
    with FolderLock(root):
        _remove_stale_temps([row for row, _ in pairs])
        for row, text in pairs:
            data = text.encode("utf-8")
            try:
                old: bytes | None = Path(row.caption_file).read_bytes()
            except FileNotFoundError:
                old = None
            except OSError as e:
                outcomes[row.image] = EditOutcome(row.image, row.caption_file, "failed",
                                                  f"cannot read the current caption file: {e.strerror or e}")
                continue
            if old == data:
                outcomes[row.image] = EditOutcome(row.image, row.caption_file, "unchanged", text=text)
                continue
            try:
                Path(row.caption_file).parent.mkdir(parents=True, exist_ok=True)  # a mirrored output folder
            except OSError as e:
                outcomes[row.image] = EditOutcome(row.image, row.caption_file, "failed",
                                                  f"cannot create the folder: {e.strerror or e}")
                continue
            todo.append((row, data, old))
        if todo:
            _append_line(root / UNDO_NAME, {"v": 1, "time": time.time(), "edits": [
                {"file": os.path.relpath(row.caption_file, root), "image": row.rel,
                 "old": None if old is None else base64.b64encode(old).decode("ascii"),
                 "new_sha256": sha256_bytes(data)} for row, data, old in todo]})
            errors = _write(root, [(row, data) for row, data, _ in todo])
            for (row, data, _), err in zip(todo, errors):
                if err is None:
                    table.set_caption(row, data.decode("utf-8"), refresh=False)
                    outcomes[row.image] = EditOutcome(row.image, row.caption_file, "saved", text=row.caption)
                else:
                    outcomes[row.image] = EditOutcome(row.image, row.caption_file, "failed",
                                                      f"cannot write the caption file: {err.strerror or err}")
            table.refresh_flags()
    return [outcomes[row.image] for row, _ in pairs]


def undo_last(table: ReviewTable, *, allowed_roots: Sequence[Path] | None = None) -> list[EditOutcome]:
    """Undo the most recent save in this table's output root (one save: one edit, or one bulk operation).

    Each file gets its old bytes back (a caption that did not exist before is removed) when it still holds what the
    save wrote; a file changed since then is left as it is (``conflict``). Restores are written like saves (lock,
    journal, atomic writes).

    Returns:
        One :class:`EditOutcome` per file of the undone save; empty when there is nothing to undo.

    Raises:
        BatchLockedError: a batch run holds the folder's lock.
        PathNotAllowedError: the undo log, journal or lock resolves outside ``allowed_roots``.
    """
    root = table_root(table)
    path = root / UNDO_NAME
    _check_own_files(root, allowed_roots)
    with FolderLock(root):
        groups = _read_undo(path)
        if not groups:
            return []
        outcomes: list[EditOutcome] = []
        restore: list[tuple[ReviewRow, bytes]] = []
        for e in groups[-1]["edits"]:
            cap = Path(os.path.normpath(root / str(e.get("file", ""))))
            try:
                row = next(r for r in table.rows if os.path.normpath(r.caption_file) == os.fspath(cap))
            except StopIteration:  # the image is gone since: a stand-in row, for the file alone
                row = ReviewRow(image="", rel=str(e.get("image", "")), caption_file=os.fspath(cap),
                                journal_root=os.fspath(root))
            if allowed_roots is not None and not is_within(cap, allowed_roots):
                outcomes.append(EditOutcome(row.image, os.fspath(cap), "failed", "outside the allowed folders"))
                continue
            try:
                current: bytes | None = cap.read_bytes()
            except FileNotFoundError:
                current = None
            except OSError as err:
                outcomes.append(EditOutcome(row.image, os.fspath(cap), "failed", f"cannot read it: {err}"))
                continue
            if current is None or hashlib.sha256(current).hexdigest() != e.get("new_sha256"):
                outcomes.append(EditOutcome(row.image, os.fspath(cap), "conflict",
                                            "changed since that save; left as it is"))
                continue
            old = e.get("old")
            if old is None:
                try:
                    cap.unlink()
                    outcomes.append(EditOutcome(row.image, os.fspath(cap), "removed"))
                    if row.image:
                        table.set_caption(row, None, refresh=False)
                except OSError as err:
                    outcomes.append(EditOutcome(row.image, os.fspath(cap), "failed", f"cannot remove it: {err}"))
                continue
            restore.append((row, base64.b64decode(old)))
        if restore:
            # A stand-in row (image gone) gets no journal record: _journal_records skips what it cannot stat.
            errors = _write(root, restore)
            for (row, data), err in zip(restore, errors):
                if err is None:
                    text, ok = decode_caption(data)
                    if row.image:
                        table.set_caption(row, text, utf8=ok, refresh=False)
                    outcomes.append(EditOutcome(row.image, row.caption_file, "restored", text=text))
                else:
                    outcomes.append(EditOutcome(row.image, row.caption_file, "failed",
                                                f"cannot write it: {err.strerror or err}"))
        table.refresh_flags()
        # The save is undone (or could not be, for files changed since): drop it from the log either way, so the
        # next undo goes one step further back instead of failing on the same conflict for ever.
        rest = b"".join((json.dumps(g, ensure_ascii=True) + "\n").encode("ascii") for g in groups[:-1])
        atomic_write_bytes(path, rest)
    return outcomes


def plan_bulk(rows: Sequence[ReviewRow], *, find: str | None = None, replace: str = "", regex: bool = False,
              prefix: str | None = None, separator: str = ", ",
              table: ReviewTable | None = None) -> list[tuple[ReviewRow, str]]:
    """The captions a bulk edit would change, with their new text (nothing is written: a preview).

    Find/replace runs first (literal text, or a regular expression with ``\\1`` group references), then the prefix
    (trigger word) is put before captions that do not start with it yet, joined by ``separator``. Missing, blank and
    non-UTF-8 captions are left out: they need a look of their own.

    Trigger words are kept: find/replace sees each caption's body only (:attr:`ReviewRow.body`), and the row's
    triggers (``table``'s, :meth:`ReviewTable.with_triggers`; without ``table``, the ones the row starts with) go
    first again, once. A prefix that is already one of them changes nothing.

    Args:
        rows: The rows to edit (a whole folder, a filtered view or a selection: only these change).

    Returns:
        ``(row, new caption)`` for every row whose caption would change; ``len()`` of it is the preview count.

    Raises:
        OptionError: an invalid regular expression (or one that ran out of time), an invalid replacement, or an
            empty find text.
    """
    from ..options_table import OptionError
    from .triggers import attach_triggers, split_triggers

    pattern = None
    if find is not None and find != "":
        # Case-sensitive, like a text editor's replace; a user's expression runs under one time limit
        # (textrules.UserPattern), so a backtracking pattern fails the preview instead of stalling the server.
        pattern = UserPattern("find", find, regex=regex, case_insensitive=False)
    elif prefix is None or not prefix.strip():
        raise OptionError("find", find, "give a text to find, or a prefix to add")
    out = []
    for row in rows:
        if row.caption is None or not row.caption.strip() or not row.utf8:
            continue
        triggers = table.row_triggers(row) if table is not None else list(row.triggers)
        body = split_triggers(row.caption, triggers)[1] if triggers else row.caption
        new_body = pattern.sub(replace, body) if pattern is not None else body
        if new_body == body:
            text = row.caption  # the body is unchanged: the triggers stay exactly as written
        else:
            text = attach_triggers(new_body, triggers, separator) if triggers else new_body
        if prefix is not None and prefix.strip():
            p = prefix.strip()
            lead = {t.casefold() for t in split_triggers(text, list(triggers) + [p])[0]}
            if p.casefold() not in lead and not text.casefold().startswith(p.casefold()):
                text = p + separator + text.lstrip()
        if text != row.caption:
            out.append((row, text))
    return out


def plan_tags(rows: Sequence[ReviewRow], *, add: Sequence[str] = (), remove: Sequence[str] = (),
              table: ReviewTable | None = None, separator: str = ", ") -> list[tuple[ReviewRow, str]]:
    """The captions adding and removing tags would change, with their new text (nothing is written: a preview;
    :func:`save_captions` of the result writes it as one undoable save).

    A tag already in a caption (or one of its trigger words) is not added again; removing keeps the other tags in
    their order; the row's trigger words (``table``'s, :meth:`ReviewTable.row_triggers`; without ``table``, the ones
    the row starts with) stay first, and a leading sentence (``caption+tags``) stays before the tags (see
    :func:`lib_clipcap.review.tags.plan_tag_edit`). A row without a caption file gets one when tags are added; a
    non-UTF-8 caption is left out (it needs a look of its own).

    Args:
        rows: The rows to edit (a selection, a filtered view, a whole folder: only these change).
        add, remove: Tags (each checked: non-empty, one line, no comma).

    Returns:
        ``(row, new caption)`` for every row whose caption would change.

    Raises:
        OptionError: a bad tag (naming ``add`` or ``remove`` and the tag), or neither given.
    """
    from ..options_table import OptionError
    from .tags import check_tags, plan_tag_edit

    add, remove = check_tags("add", list(add)), check_tags("remove", list(remove))
    if not add and not remove:
        raise OptionError("add", add, "give a tag to add or to remove")
    out = []
    for row in rows:
        if row.caption is not None and not row.utf8:
            continue
        triggers = table.row_triggers(row) if table is not None else list(row.triggers)
        text = plan_tag_edit(row.caption, triggers, add=add, remove=remove, separator=separator)
        if text is not None:
            out.append((row, text))
    return out
