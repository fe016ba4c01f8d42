"""Run records, backups and undo: every batch run that changes a caption file can be taken back.

Each output root has a ClipCap state folder, ``.clipcap/`` (never a symlink: one is refused, as is anything that
resolves outside the allowed folders), holding::

    .clipcap/runs/<run id>.json   one per run: id, times, options, model, state, counts, undo state
    .clipcap/files.jsonl          one line per caption file a run wrote: run id, path relative to the root, action
                                  (created / changed), SHA-256 before (None when created) and after, and what the
                                  tool wrote: its own segment (prefix, generated caption, suffix), the user's text it
                                  kept and the trigger words it put first
    .clipcap/backups/<sha256>     the bytes a run replaced, content-addressed (a file changed by ten runs back to the
                                  same text is stored once)

Order of a batch, every step fsynced before the next: backups -> ``files.jsonl`` lines -> journal -> renames. So a
line exists for every file a run touched, and its backup exists before the file is replaced; a run killed before its
renames leaves lines whose ``after`` no file holds, which undo recognises as nothing to do.

Undo (:func:`undo_run`) restores, per file, only where the file still holds what that run wrote (``after``);
a file that already holds the old bytes counts as done; any other file was changed since and is refused, reported by
name. Each restore is one atomic write, so a SIGKILL during an undo leaves every file old or new, and running the undo
again finishes it. The undo holds the folder lock, so it never interleaves with a run.

``files.jsonl`` is also how a later run recognises its own text (:func:`lib_clipcap.batch.policy.own_part`): the
lines outlive retention, which drops only run records and backups nobody else needs, and says so
(:attr:`TagSummary.pruned_runs <lib_clipcap.batch.options.TagSummary>`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..fileio import atomic_write_bytes
from .discover import check_allowed, is_within
from .errors import BatchError
from .journal import file_sha256, sha256_bytes

log = logging.getLogger(__name__)

STATE_DIR = ".clipcap"
FILES_NAME = "files.jsonl"
_RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
#: Runs whose records and backups are kept per output root unless the user sets another number (``keep_runs``).
DEFAULT_KEEP_RUNS = 20


class RunNotFoundError(BatchError, LookupError):
    """No run record with that id in the folder (never made there, or dropped by retention)."""


def new_run_id(now: float | None = None) -> str:
    """A sortable, unique run id: ``YYYYmmdd-HHMMSS-<6 hex>`` (local time)."""
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class FileRecord:
    """What one run did to one caption file (one line of ``files.jsonl``)."""

    run: str
    out: str  # relative to the output root, posix style
    action: str  # created / changed
    before: str | None  # SHA-256 of the bytes it replaced (None: the file did not exist)
    after: str  # SHA-256 of the bytes it wrote
    own: str = ""  # the tool's segment: prefix, generated caption, suffix joined
    user: str = ""  # the user's text the run kept beside it ("" with overwrite / a new file)
    triggers: tuple = ()  # trigger words the run put first
    policy: str = ""  # the existing-caption policy that placed ``own`` beside ``user``

    def line(self) -> dict[str, Any]:
        d = asdict(self)
        d["triggers"] = list(self.triggers)
        return d

    @classmethod
    def parse(cls, rec: dict[str, Any]) -> FileRecord:
        before = rec.get("before")
        if before is not None and not _SHA.match(str(before)):
            raise ValueError("bad before hash")
        if not _SHA.match(str(rec["after"])) or rec["action"] not in ("created", "changed"):
            raise ValueError("bad record")
        return cls(str(rec["run"]), str(rec["out"]), rec["action"], before, rec["after"], str(rec.get("own", "")),
                   str(rec.get("user", "")), tuple(str(t) for t in rec.get("triggers") or ()),
                   str(rec.get("policy", "")))


@dataclass
class UndoReport:
    """What :func:`undo_run` did.

    Attributes:
        run: The run id undone.
        restored: Files given back their previous bytes.
        removed: Files the run had created, deleted.
        already: Files that already held their previous state (an earlier, interrupted undo; or a run killed before
            it wrote them).
        refused: ``{"path", "reason"}`` for every file left alone (changed since the run wrote it, unsafe path...).
        complete: Nothing was refused: the run is now marked undone.
    """

    run: str
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    complete: bool = False

    def line(self) -> str:
        """``undo RUN: restored N, removed N, already undone N, refused N``."""
        return (f"undo {self.run}: restored {len(self.restored)}, removed {len(self.removed)}, already undone "
                f"{len(self.already)}, refused {len(self.refused)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly data."""
        return asdict(self)


# ------------------------------------------------------------------------------------------------ the folder
class StateFolder:
    """The ``.clipcap`` state folder of one output root.

    Args:
        root: The output root (absolute).
        allowed_roots: Real paths of the folders a job may touch, or ``None`` (anywhere).
    """

    def __init__(self, root: Path, allowed_roots: Sequence[Path] | None = None) -> None:
        self.root = Path(root)
        self.path = self.root / STATE_DIR
        self.allowed_roots = allowed_roots
        self.runs_dir = self.path / "runs"
        self.backups_dir = self.path / "backups"
        self.files_path = self.path / FILES_NAME

    def check(self) -> None:
        """Raise unless the state folder may be used: inside the allowed folders, and no symlink on the way.

        Raises:
            PathNotAllowedError: it resolves outside the allowed folders.
            BatchError: it (or a folder in it) is a symlink or not a folder.
        """
        check_allowed(self.path, self.allowed_roots, "state folder")
        for p in (self.path, self.runs_dir, self.backups_dir, self.files_path):
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                raise BatchError(f"{p} is a symlink; ClipCap keeps its run records and backups only in a real "
                                 f"folder and does not follow it (remove the link)")
            if p != self.files_path and not stat.S_ISDIR(st.st_mode):
                raise BatchError(f"{p} is in the way of ClipCap's state folder (it is not a folder); move it away")

    def ensure(self) -> StateFolder:
        """Create the folders (after :meth:`check`)."""
        self.check()
        for p in (self.path, self.runs_dir, self.backups_dir):
            p.mkdir(exist_ok=True)
        self.check()  # again: nothing swapped a link in while we created them
        return self

    # -------------------------------------------------------------------------------- backups
    def backup(self, data: bytes) -> str:
        """Keep ``data`` (atomic, fsynced) under its SHA-256; returns the hash. An intact copy is reused."""
        sha = sha256_bytes(data)
        path = self.backups_dir / sha
        if file_sha256(path) != sha:
            atomic_write_bytes(path, data, mode=0o600)
        return sha

    def read_backup(self, sha: str) -> bytes | None:
        """The backed-up bytes of ``sha``, or ``None`` when missing or damaged."""
        if not _SHA.match(sha):
            return None
        try:
            data = (self.backups_dir / sha).read_bytes()
        except OSError:
            return None
        return data if sha256_bytes(data) == sha else None

    # -------------------------------------------------------------------------------- records
    def write_run(self, info: dict[str, Any]) -> None:
        """Write (atomically) the run record ``info`` (must hold ``id``)."""
        if not _RUN_ID.match(str(info.get("id", ""))):
            raise ValueError(f"bad run id {info.get('id')!r}")
        atomic_write_bytes(self.runs_dir / f"{info['id']}.json",
                           (json.dumps(info, ensure_ascii=True, default=str, indent=1) + "\n").encode("ascii"))

    def read_run(self, run_id: str) -> dict[str, Any]:
        """The run record of ``run_id``.

        Raises:
            RunNotFoundError: no such run here (the message lists how to see the runs).
        """
        if not _RUN_ID.match(run_id or ""):
            raise RunNotFoundError(f"{run_id!r} is not a run id (they look like 20240131-120000-a1b2c3); list the "
                                   f"runs of {self.root} with --runs")
        try:
            return json.loads((self.runs_dir / f"{run_id}.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunNotFoundError(f"no run {run_id} in {self.root} (never made there, or its record was dropped by "
                                   f"the keep_runs retention); list the runs with --runs") from None
        except (OSError, ValueError) as e:
            raise BatchError(f"cannot read the record of run {run_id} ({e})") from e

    def runs(self) -> list[dict[str, Any]]:
        """Every run record here, oldest first (unreadable ones skipped with a warning)."""
        out = []
        try:
            names = sorted(os.listdir(self.runs_dir))
        except FileNotFoundError:
            return []
        for name in names:
            if name.endswith(".json") and _RUN_ID.match(name[:-5]):
                try:
                    out.append(json.loads((self.runs_dir / name).read_text(encoding="utf-8")))
                except (OSError, ValueError) as e:
                    log.warning("cannot read the run record %s: %s", self.runs_dir / name, e)
        # by start time: two runs in the same second have ids that sort by their random part
        return sorted(out, key=lambda r: (float(r.get("started") or 0), str(r.get("id"))))

    def append_files(self, records: Sequence[FileRecord]) -> None:
        """Append one line per record to ``files.jsonl`` in one write, then fsync.

        Raises:
            OSError: it cannot be written (the run must stop: it could not be undone).
        """
        if not records:
            return
        blob = "".join(json.dumps(r.line(), ensure_ascii=True) + "\n" for r in records).encode("ascii")
        fd = os.open(self.files_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            if os.fstat(fd).st_size:  # a line torn by a power loss: start ours on a new line
                if os.pread(fd, 1, os.fstat(fd).st_size - 1) != b"\n":
                    blob = b"\n" + blob
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def file_records(self) -> list[FileRecord]:
        """Every line of ``files.jsonl``, in order (torn or malformed lines skipped)."""
        try:
            raw = self.files_path.read_bytes()
        except OSError:
            return []
        out = []
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                out.append(FileRecord.parse(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def history(self) -> dict[str, list[FileRecord]]:
        """``files.jsonl`` by file: relative path -> its records, oldest first."""
        out: dict[str, list[FileRecord]] = {}
        for r in self.file_records():
            out.setdefault(r.out, []).append(r)
        return out

    # -------------------------------------------------------------------------------- retention
    def prune(self, keep: int | None, *, current: str) -> list[str]:
        """Drop the records and unneeded backups of all but the ``keep`` newest runs (``current`` always kept).

        Returns:
            The ids of the runs dropped (the caller reports them: a backup is never dropped silently).
        """
        if keep is None:
            return []
        runs = [r["id"] for r in self.runs() if r.get("id") != current]
        drop = runs[: max(0, len(runs) - (keep - 1))]
        if not drop:
            return []
        for run_id in drop:
            try:
                os.unlink(self.runs_dir / f"{run_id}.json")
            except OSError as e:
                log.warning("cannot drop the record of run %s: %s", run_id, e)
        kept = {r["id"] for r in self.runs()} | {current}
        needed = {r.before for r in self.file_records() if r.run in kept and r.before}
        try:
            names = os.listdir(self.backups_dir)
        except FileNotFoundError:
            names = []
        for name in names:
            if _SHA.match(name) and name not in needed:
                try:
                    os.unlink(self.backups_dir / name)
                except OSError:
                    pass
        log.info("dropped the records and backups of %d old run(s) in %s (keep_runs=%d): %s", len(drop), self.root,
                 keep, ", ".join(drop))
        return drop


# ------------------------------------------------------------------------------------------------ one run
class RunLog:
    """The record of one run in one output root, started on its first write (a run that writes nothing leaves no
    record). Used from the writer thread only.

    Args:
        state: The root's state folder.
        run_id: The run's id (the same in every root of the run).
        info: What the run record holds besides its state: ``options``, ``model``, ``engine``.
        keep_runs: Retention (see :meth:`StateFolder.prune`).
    """

    def __init__(self, state: StateFolder, run_id: str, info: dict[str, Any], keep_runs: int | None) -> None:
        self.state = state
        self.run_id = run_id
        self.info = {"id": run_id, "started": time.time(), "finished": None, "state": "running", **info}
        self.keep_runs = keep_runs
        self.started = False
        self.pruned: list[str] = []

    def _begin(self) -> None:
        if not self.started:
            self.state.ensure()
            self.state.write_run(self.info)
            self.started = True
            self.pruned = self.state.prune(self.keep_runs, current=self.run_id)

    def backup(self, data: bytes) -> str:
        """Keep the bytes a write is about to replace (see :meth:`StateFolder.backup`)."""
        self._begin()
        return self.state.backup(data)

    def record(self, records: Sequence[FileRecord]) -> None:
        """Append the run's file records (fsynced) before the files are renamed into place."""
        self._begin()
        self.state.append_files(records)

    def finish(self, state: str, counts: dict[str, Any]) -> None:
        """Mark the run ``done`` / ``stopped`` / ``failed`` with its counts (only if it wrote anything)."""
        if self.started:
            self.info.update(state=state, finished=time.time(), **counts)
            self.state.write_run(self.info)


# ----------------------------------------------------------------------------------------------------- undo
def _safe_target(state: StateFolder, rel: str) -> tuple[Path | None, str]:
    """The caption file a record names, or ``(None, why)`` when undoing it could write outside the root."""
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or p.parts[0] == STATE_DIR:
        return None, "the record names a path outside the folder; left alone"
    target = state.root.joinpath(*p.parts)
    if not is_within(target, [Path(os.path.realpath(state.root))]):
        return None, "its folder now resolves outside the run's folder (a symlink); left alone"
    if state.allowed_roots is not None and not is_within(target, state.allowed_roots):
        return None, "it resolves outside the allowed folders; left alone"
    if os.path.islink(target):
        return None, "it is now a symlink; ClipCap does not follow it"
    return target, ""


def _restore(target: Path, data: bytes) -> None:
    """Give ``target`` its old bytes in one atomic write (the unit a SIGKILL cannot split)."""
    atomic_write_bytes(target, data)


def _remove(target: Path) -> None:
    os.unlink(target)
    from ..fileio import _fsync_dir

    _fsync_dir(target.parent)


def latest_run(state: StateFolder) -> str | None:
    """The newest run of the folder not yet (completely) undone, or ``None``."""
    for info in reversed(state.runs()):
        if not info.get("undone"):
            return info["id"]
    return None


def undo_run(root: Path, run_id: str | None = None, *,
             allowed_roots: Sequence[Path] | None = None) -> UndoReport:
    """Restore every caption file run ``run_id`` changed and remove those it created, where safe.

    Args:
        root: The run's output root (the folder given to ``tag``, or its ``--output-dir``).
        run_id: The run (default: the newest one not undone yet).
        allowed_roots: Real paths of the folders this caller may write; ``None``: anywhere.

    Returns:
        An :class:`UndoReport`; files changed since the run are refused there, one by one, never overwritten.

    Raises:
        RunNotFoundError: no such run (or no run at all).
        BatchLockedError: a run is tagging the folder right now.
        PathNotAllowedError, BatchError: the folder or its state folder may not be used.
    """
    from .lock import FolderLock

    root = Path(os.path.abspath(root))
    check_allowed(root, allowed_roots, "folder")
    state = StateFolder(root, allowed_roots)
    state.check()
    if not state.path.is_dir():
        raise RunNotFoundError(f"{root} has no ClipCap run records (no {STATE_DIR} folder): nothing to undo")
    with FolderLock(root):
        if run_id is None:
            run_id = latest_run(state)
            if run_id is None:
                raise RunNotFoundError(f"every run recorded in {root} is already undone; list them with --runs")
        info = state.read_run(run_id)
        report = UndoReport(run_id)
        # the last line per file wins within a run (a file is written once per run; be robust anyway)
        mine: dict[str, FileRecord] = {}
        for r in state.file_records():
            if r.run == run_id:
                mine.setdefault(r.out, r)
        for rel, rec in sorted(mine.items()):
            _undo_one(state, rel, rec, report)
        report.complete = not report.refused
        info["undo"] = {"at": time.time(), "restored": len(report.restored), "removed": len(report.removed),
                        "refused": report.refused[:200]}
        if report.complete:
            info["undone"] = time.time()
        state.write_run(info)
    log.info("%s", report.line())
    return report


def _undo_one(state: StateFolder, rel: str, rec: FileRecord, report: UndoReport) -> None:
    target, why = _safe_target(state, rel)
    shown = rel
    if target is None:
        report.refused.append({"path": shown, "reason": why})
        return
    if os.path.isdir(target):
        report.refused.append({"path": shown, "reason": "a folder is in its place now; left alone"})
        return
    current = file_sha256(target) if os.path.lexists(target) else None
    if rec.action == "created":
        if current is None:
            report.already.append(shown)
        elif current == rec.after:
            try:
                _remove(target)
                report.removed.append(shown)
            except OSError as e:
                report.refused.append({"path": shown, "reason": f"cannot remove it: {e.strerror or e}"})
        else:
            report.refused.append({"path": shown, "reason": "changed since the run created it (edited by hand, in "
                                                            "review, or by a later run); left as it is"})
        return
    if current == rec.before:
        report.already.append(shown)
        return
    if current != rec.after:
        report.refused.append({"path": shown, "reason": "changed since the run wrote it (edited by hand, in review, "
                                                        "or by a later run: undo that run first); left as it is"})
        return
    data = state.read_backup(rec.before or "")
    if data is None:
        report.refused.append({"path": shown, "reason": f"its backup {rec.before} is missing or damaged in "
                                                        f"{state.backups_dir}; left as it is"})
        return
    try:
        _restore(target, data)
        report.restored.append(shown)
    except OSError as e:
        report.refused.append({"path": shown, "reason": f"cannot write it: {e.strerror or e}"})


def list_runs(root: Path, *, allowed_roots: Sequence[Path] | None = None) -> list[dict[str, Any]]:
    """The runs recorded for ``root``, oldest first: ``id``, ``started``, ``finished``, ``state``, ``model``,
    ``created``, ``changed`` (file counts), ``undone`` (time or ``None``), ``options`` (the run's own).

    Raises:
        PathNotAllowedError, BatchError: the folder or its state folder may not be used.
    """
    root = Path(os.path.abspath(root))
    check_allowed(root, allowed_roots, "folder")
    state = StateFolder(root, allowed_roots)
    state.check()
    counts: dict[str, dict[str, int]] = {}
    for r in state.file_records():
        c = counts.setdefault(r.run, {"created": 0, "changed": 0})
        c[r.action] += 1
    out = []
    for info in state.runs():
        c = counts.get(info.get("id"), {"created": 0, "changed": 0})
        out.append({"id": info.get("id"), "started": info.get("started"), "finished": info.get("finished"),
                    "state": info.get("state"), "model": info.get("model"), "engine": info.get("engine"),
                    "created": c["created"], "changed": c["changed"], "undone": info.get("undone"),
                    "undo": info.get("undo"), "options": info.get("options")})
    return out


def describe_runs(runs: Iterable[dict[str, Any]]) -> list[str]:
    """One line per run for a terminal: id, start time, state, counts, policy."""
    lines = []
    for r in runs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"])) if r.get("started") else "?"
        state = "undone" if r.get("undone") else (r.get("state") or "?")
        opts = r.get("options") or {}
        lines.append(f"{r['id']}\t{when}\t{state}\tcreated {r['created']}, changed {r['changed']}\t"
                     f"existing={opts.get('existing', '?')}\t{r.get('model') or ''}")
    return lines
