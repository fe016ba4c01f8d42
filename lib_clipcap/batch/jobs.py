"""Batch-tagging jobs for the HTTP API and the UI: start, poll, cancel; confined to folders the user allowed.

::

    jobs = JobManager(manager, [Path("/data/datasets")])
    job_id = jobs.start(TagOptions(inputs=["/data/datasets/lora1"]), "flickr8k")
    jobs.status(job_id)   # {"state": "running", "done": 12, "total": 300, "written": 12, ...}
    jobs.cancel(job_id)   # stops after the current batch; the journal lets a new job resume

Jobs run one at a time, in order, on one background thread (two jobs on one machine would only fight over the same
cores or GPU). Each batch takes the model through ``manager.using(model)``, so interactive caption requests are
served between batches instead of waiting for the whole job.

Every path of a job (inputs, list file, output folder, manifests, and every file and folder found, symlinks
resolved) must lie inside one of ``allowed_roots``; relative paths are taken relative to the first root. Caption
files get one of ``caption_exts`` only (:data:`DEFAULT_CAPTION_EXTS` unless the operator adds more; compared
case-folded, :func:`lib_clipcap.textrules.check_suffix`): a job started over the network must not be able to write a
``.desktop`` launcher, a ``.sh`` or a ``.bashrc``. For the same reason a manifest is only a ``.jsonl`` / ``.csv``
file that is new or that an earlier run wrote (:func:`lib_clipcap.batch.writer.check_manifest_file`), checked when
the job is started, so a refusal is an immediate error rather than a failed job.

Different faces may allow different folders (the WebUI lets its own Caption tab use any local folder but the HTTP API
only the folders named in its settings): :meth:`JobManager.scope` gives each face a view with its own folders and
suffixes over the one queue, so jobs still run one at a time.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ClipCapError
from ..options_table import OptionError
from ..textrules import check_suffix, suffix_key
from .discover import check_allowed
from .errors import BatchInputError
from .options import TAGS_EXT, FileOutcome, TagOptions
from .writer import check_manifest_file

log = logging.getLogger(__name__)

#: Failures listed in a status (the ``failed`` count is always complete).
MAX_LISTED_FAILURES = 200
STATES = ("queued", "running", "done", "cancelled", "failed")
#: Caption-file suffixes a job may write unless the operator allows more (trainers read .txt, .caption and .tags
#: sidecars; .json for tools that keep captions as JSON).
DEFAULT_CAPTION_EXTS = (".txt", ".caption", ".tags", ".json")
_MANAGER_DEFAULT: Any = object()  # "the manager's own setting" (None already means "any suffix")


def parse_caption_exts(text: Any) -> list[str]:
    """Suffixes from a setting such as ``".md, .cap"`` (commas, spaces or new lines; a missing dot is added).

    Raises:
        OptionError: a suffix holds a path separator or is an image suffix (see :class:`TagOptions`).
    """
    if isinstance(text, str):
        text = text.replace(",", " ").split()
    out = []
    for ext in text or ():
        ext = str(ext).strip()
        if ext:
            out.append(TagOptions._check_ext(ext if ext.startswith(".") else "." + ext))
    return out


@dataclasses.dataclass
class _Job:
    id: str
    model: str
    options: TagOptions
    state: str = "queued"
    created: float = dataclasses.field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    done: int = 0
    total: int | None = None
    written: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = dataclasses.field(default_factory=list)
    current: str | None = None
    error: str | None = None
    images_per_s: float | None = None
    eta_s: float | None = None
    processed: int = 0
    to_process: int | None = None
    resumed: int = 0
    kept: int = 0
    run_ids: dict[str, str] = dataclasses.field(default_factory=dict)
    pruned_runs: list[str] = dataclasses.field(default_factory=list)
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    roots: list[Path] = dataclasses.field(default_factory=list)


class JobManager:
    """Runs :func:`~lib_clipcap.batch.run_tagging` jobs in the background.

    Args:
        manager: The :class:`~lib_clipcap.app.service.ModelManager` the models come from.
        allowed_roots: Folders jobs may read and write (resolved to real paths here).
        caption_exts: Caption-file suffixes jobs may write (case-insensitive); ``None``: any suffix that is not an
            image's (for a caller that trusts every request, like a local command line).
        caption_exts_hint: How the operator allows another suffix, quoted when one is refused.
        roots_hint: How the operator allows another folder (a flag or a setting), quoted when a path is refused.
        keep_finished: Finished jobs remembered for :meth:`status` (oldest forgotten first).
    """

    def __init__(self, manager: Any, allowed_roots: Sequence[Path], *,
                 caption_exts: Sequence[str] | None = DEFAULT_CAPTION_EXTS,
                 caption_exts_hint: str = "the server's allowed caption suffixes", roots_hint: str = "",
                 keep_finished: int = 100) -> None:
        self.manager = manager
        self.allowed_roots = _real_roots(allowed_roots)
        self.caption_exts = None if caption_exts is None else tuple(suffix_key(e) for e in caption_exts)
        self.caption_exts_hint = caption_exts_hint
        self.roots_hint = roots_hint
        self.keep_finished = keep_finished
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    # -------------------------------------------------------------------------------------------- public API
    def scope(self, allowed_roots: Sequence[Path], *, caption_exts: Sequence[str] | None = DEFAULT_CAPTION_EXTS,
              caption_exts_hint: str | None = None, roots_hint: str | None = None) -> JobScope:
        """A view of this queue whose jobs are confined to other folders and suffixes (see the module docstring)."""
        return JobScope(self, allowed_roots, caption_exts=caption_exts,
                        caption_exts_hint=caption_exts_hint or self.caption_exts_hint,
                        roots_hint=self.roots_hint if roots_hint is None else roots_hint)

    def check_options(self, options: TagOptions, *, allowed_roots: Sequence[Path] | None = None,
                      caption_exts: Any = _MANAGER_DEFAULT, caption_exts_hint: str | None = None,
                      roots_hint: str | None = None) -> TagOptions:
        """``options`` with every path absolute and checked against the allowed roots and suffixes.

        Args:
            options: The job's options.
            allowed_roots, caption_exts, caption_exts_hint, roots_hint: Override this manager's (used by
                :class:`JobScope`).

        Returns:
            A copy with absolute paths (relative ones resolved against the first allowed root).

        Raises:
            PathNotAllowedError: a path is outside the allowed roots (message names it and the roots).
            BatchInputError: an input or the list file does not exist.
            OptionError: the caption suffix is not allowed, a path holds a control character, or a manifest exists
                and was not written by this tool.
        """
        roots = self.allowed_roots if allowed_roots is None else _real_roots(allowed_roots)
        exts = self.caption_exts if caption_exts is _MANAGER_DEFAULT else caption_exts
        if exts is not None:  # the one case-folded suffix rule (.TXT is .txt), as the options' own check
            check_suffix("caption_ext", options.caption_ext, allowed=list(exts),
                         allowed_hint=caption_exts_hint or self.caption_exts_hint)
            if options.tags_file and TAGS_EXT not in {suffix_key(e) for e in exts}:  # a .tags file: a caption file
                raise OptionError("tags_file", options.tags_file,
                                  f"writes {TAGS_EXT} files, which are not among "
                                  f"{caption_exts_hint or self.caption_exts_hint} ({', '.join(exts)})")

        def absolute(p: str, what: str) -> str:
            if any(ord(c) < 32 or ord(c) == 127 for c in p):
                raise OptionError(what, p, "the path holds a control character; give a plain path")
            q = Path(p).expanduser()
            if not q.is_absolute() and roots:
                q = roots[0] / q
            return os.path.abspath(q)

        hint = self.roots_hint if roots_hint is None else roots_hint
        inputs = [absolute(p, "inputs") for p in options.inputs]
        for p in inputs:
            check_allowed(p, roots, "input", hint=hint)
            if not os.path.exists(p):
                raise BatchInputError(f"input not found: {p}")
        changes: dict[str, Any] = {"inputs": inputs}
        for name, what in (("list_file", "list file"), ("output_dir", "output folder"),
                           ("manifest_jsonl", "manifest"), ("manifest_csv", "manifest")):
            value = getattr(options, name)
            if value:
                changes[name] = absolute(value, name)
                check_allowed(changes[name], roots, what, hint=hint)
        if options.list_file and not os.path.isfile(changes["list_file"]):
            raise BatchInputError(f"list file not found: {changes['list_file']}")
        for name, kind in (("manifest_jsonl", "jsonl"), ("manifest_csv", "csv")):
            if getattr(options, name):  # a new file, or a manifest of an earlier run: refused now, not when it runs
                check_manifest_file(changes[name], kind, shown=getattr(options, name))
        if options.tag_vocabulary:  # a vocabulary file is read like an input: only inside the folders, checked now
            from ..tags.vocabulary import is_bundled_name

            vocabularies = []
            for spec in options.tag_vocabulary:
                if not is_bundled_name(spec):
                    spec = absolute(spec, "tag_vocabulary")
                    check_allowed(spec, roots, "tag vocabulary", hint=hint)
                    if not os.path.isfile(spec):
                        raise OptionError("tag_vocabulary", options.tag_vocabulary,
                                          f"no such file: {spec}; give a bundled vocabulary's name or a .txt/.json "
                                          f"vocabulary file inside the allowed folders")
                vocabularies.append(spec)
            changes["tag_vocabulary"] = vocabularies
        return dataclasses.replace(options, **changes)

    def start(self, options: TagOptions, model: str, **scope: Any) -> str:
        """Queue a job and return its id.

        Args:
            options: What to tag (paths checked by :meth:`check_options`).
            model: Registry name of the model (loaded when the job starts).
            **scope: ``allowed_roots``, ``caption_exts``, ``caption_exts_hint``, ``roots_hint`` overriding this
                manager's.

        Returns:
            The job id (a short string).

        Raises:
            PathNotAllowedError, BatchInputError, OptionError: as :meth:`check_options`; nothing is queued then.
        """
        options = self.check_options(options, **scope)
        roots = self.allowed_roots if scope.get("allowed_roots") is None else _real_roots(scope["allowed_roots"])
        job_id = f"{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        with self._lock:
            self._jobs[job_id] = _Job(job_id, model, options, roots=roots)
            self._forget_old()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="clipcap-batch-jobs", daemon=True)
                self._thread.start()
        self._queue.put(job_id)
        log.info("batch job %s queued: %s with %s", job_id, ", ".join(options.inputs) or options.list_file, model)
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        """The job's state as JSON-friendly data.

        Returns:
            ``id``, ``model``, ``state`` (queued/running/done/cancelled/failed), ``cancel_requested``, ``done``,
            ``total`` (``None`` until files are counted), ``written``, ``skipped``, ``failed``, ``failures`` (up to
            200 ``{"path", "reason"}``), ``current`` (file being finished), ``error`` (why a job failed),
            ``images_per_s`` and ``eta_s`` (while running too: from the files captioned so far, skipped ones not
            counted), ``processed`` / ``to_process`` (files captioned of those that need it), ``resumed`` /
            ``kept`` (the two kinds of ``skipped``: already done by an earlier run, had a caption the policy keeps),
            ``run_ids`` (output root -> run id, for undo), ``pruned_runs``, ``created``/``started``/``finished``
            (epoch seconds), ``options``.

        Raises:
            KeyError: no such job.
        """
        with self._lock:
            job = self._get(job_id)
            return {
                "id": job.id, "model": job.model, "state": job.state, "cancel_requested": job.cancel.is_set(),
                "done": job.done, "total": job.total, "written": job.written, "skipped": job.skipped,
                "failed": job.failed, "failures": [dict(f) for f in job.failures], "current": job.current,
                "error": job.error, "images_per_s": job.images_per_s, "eta_s": job.eta_s,
                "processed": job.processed, "to_process": job.to_process, "resumed": job.resumed, "kept": job.kept,
                "run_ids": dict(job.run_ids), "pruned_runs": list(job.pruned_runs), "created": job.created,
                "started": job.started, "finished": job.finished, "options": job.options.to_dict(),
            }

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job: a queued one never starts; a running one stops after its current batch.

        Returns:
            The job's status (a running job may still say ``running`` for one batch, with ``cancel_requested``).

        Raises:
            KeyError: no such job.
        """
        with self._lock:
            job = self._get(job_id)
            job.cancel.set()
            if job.state == "queued":
                job.state, job.finished = "cancelled", time.time()
        return self.status(job_id)

    def jobs(self) -> list[dict[str, Any]]:
        """Status of every remembered job, oldest first."""
        with self._lock:
            ids = list(self._jobs)
        return [self.status(i) for i in ids]

    def folder(self, folder: Any, *, allowed_roots: Sequence[Path] | None = None, field: str = "folder",
               roots_hint: str | None = None) -> Path:
        """``folder`` as an absolute path inside the allowed folders (relative: to the first one), existing.

        Raises:
            OptionError: not a string, or it holds a control character (naming ``field``).
            PathNotAllowedError: outside the allowed folders.
            BatchInputError: no such folder.
        """
        roots = self.allowed_roots if allowed_roots is None else _real_roots(allowed_roots)
        if not isinstance(folder, str) or not folder.strip():
            raise OptionError(field, folder, "must be the path of a folder that was tagged (or its output_dir)")
        if any(ord(c) < 32 or ord(c) == 127 for c in folder):
            raise OptionError(field, folder, "the path holds a control character; give a plain path")
        q = Path(folder).expanduser()
        if not q.is_absolute() and roots:
            q = roots[0] / q
        path = Path(os.path.abspath(q))
        check_allowed(path, roots, field, hint=self.roots_hint if roots_hint is None else roots_hint)
        if not path.is_dir():
            raise BatchInputError(f"{field} not found: {path}")
        return path

    def runs(self, folder: Any, *, allowed_roots: Sequence[Path] | None = None,
             roots_hint: str | None = None) -> list[dict[str, Any]]:
        """The runs recorded for ``folder`` (:func:`lib_clipcap.batch.runs.list_runs`), same folder rules as jobs."""
        from .runs import list_runs

        roots = self.allowed_roots if allowed_roots is None else _real_roots(allowed_roots)
        return list_runs(self.folder(folder, allowed_roots=roots, roots_hint=roots_hint), allowed_roots=roots)

    def undo(self, folder: Any, run_id: str | None = None, *,
             allowed_roots: Sequence[Path] | None = None, roots_hint: str | None = None) -> dict[str, Any]:
        """Undo a run of ``folder`` (:func:`lib_clipcap.batch.runs.undo_run`; nothing is written outside the allowed
        folders, no symlink is followed); returns the :class:`~lib_clipcap.batch.runs.UndoReport` as data.

        Raises:
            OptionError: ``run`` is not a string.
            RunNotFoundError, BatchLockedError, PathNotAllowedError, BatchInputError: as :func:`undo_run`.
        """
        from .runs import undo_run

        if run_id is not None and not isinstance(run_id, str):
            raise OptionError("run", run_id, "must be a run id string (see the runs list)")
        roots = self.allowed_roots if allowed_roots is None else _real_roots(allowed_roots)
        return undo_run(self.folder(folder, allowed_roots=roots, roots_hint=roots_hint), run_id or None,
                        allowed_roots=roots).to_dict()

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job has finished (or ``timeout`` seconds passed); return its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status["state"] in ("done", "cancelled", "failed"):
                return status
            if deadline is not None and time.monotonic() > deadline:
                return status
            time.sleep(0.05)

    # ------------------------------------------------------------------------------------------------ worker
    def _get(self, job_id: str) -> _Job:
        try:
            return self._jobs[str(job_id)]
        except KeyError:
            raise KeyError(f"no batch job {job_id!r}") from None

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in ("done", "cancelled", "failed")]
        for job in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._jobs[job.id]

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None or job.state != "queued":
                    continue
                job.state, job.started = "running", time.time()
            self._run(job)

    def _run(self, job: _Job) -> None:
        from .runner import run_tagging

        def on_progress(p: Any) -> None:
            with self._lock:
                job.done, job.total, job.current = p.done, p.total, p.current or job.current
                job.processed, job.to_process = p.processed, p.to_process
                job.images_per_s, job.eta_s = p.images_per_s, p.eta_s

        def on_file(o: FileOutcome) -> None:
            with self._lock:
                setattr(job, o.tally, getattr(job, o.tally) + 1)
                if o.status == "skipped":
                    if o.category == "resumed":
                        job.resumed += 1
                    else:
                        job.kept += 1
                if o.tally == "failed" and len(job.failures) < MAX_LISTED_FAILURES:
                    job.failures.append({"path": o.path, "reason": o.reason})

        try:
            summary = run_tagging(job.options, lambda: self.manager.using(job.model), on_progress=on_progress,
                                  should_stop=job.cancel.is_set, on_file=on_file, allowed_roots=job.roots,
                                  model_name=job.model)
        except Exception as e:  # noqa: BLE001 - any failure ends this job, never the worker thread
            log.warning("batch job %s failed: %s", job.id, e, exc_info=not isinstance(e, ClipCapError))
            with self._lock:
                job.state, job.error, job.finished = "failed", str(e) or type(e).__name__, time.time()
            return
        with self._lock:
            job.total = summary.total
            job.images_per_s = summary.images_per_s
            job.eta_s = 0.0 if not summary.stopped else None
            job.run_ids, job.pruned_runs = dict(summary.run_ids), list(summary.pruned_runs)
            job.current = None
            job.state = "cancelled" if summary.stopped else "done"
            job.finished = time.time()
        log.info("batch job %s %s: %s", job.id, job.state, summary.line())


def _real_roots(roots: Sequence[Path]) -> list[Path]:
    return [Path(os.path.realpath(Path(r).expanduser())) for r in roots]


class JobScope:
    """One face's view of a :class:`JobManager`: its own folders and caption suffixes, the shared queue.

    It has the manager's interface (``start``, ``status``, ``cancel``, ``jobs``, ``wait``, ``check_options``,
    ``allowed_roots``), so the HTTP API and the UI take either.
    """

    def __init__(self, jobs: JobManager, allowed_roots: Sequence[Path], *,
                 caption_exts: Sequence[str] | None = DEFAULT_CAPTION_EXTS,
                 caption_exts_hint: str = "the server's allowed caption suffixes", roots_hint: str = "") -> None:
        self.base = jobs
        self.manager = jobs.manager
        self.allowed_roots = _real_roots(allowed_roots)
        self.caption_exts = None if caption_exts is None else tuple(suffix_key(e) for e in caption_exts)
        self.caption_exts_hint = caption_exts_hint
        self.roots_hint = roots_hint

    def _scope(self) -> dict[str, Any]:
        return {"allowed_roots": self.allowed_roots, "caption_exts": self.caption_exts,
                "caption_exts_hint": self.caption_exts_hint, "roots_hint": self.roots_hint}

    def check_options(self, options: TagOptions) -> TagOptions:
        """As :meth:`JobManager.check_options`, with this scope's folders and suffixes."""
        return self.base.check_options(options, **self._scope())

    def start(self, options: TagOptions, model: str) -> str:
        """As :meth:`JobManager.start`, with this scope's folders and suffixes."""
        return self.base.start(options, model, **self._scope())

    def status(self, job_id: str) -> dict[str, Any]:
        """As :meth:`JobManager.status`."""
        return self.base.status(job_id)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """As :meth:`JobManager.cancel`."""
        return self.base.cancel(job_id)

    def jobs(self) -> list[dict[str, Any]]:
        """As :meth:`JobManager.jobs`."""
        return self.base.jobs()

    def runs(self, folder: Any) -> list[dict[str, Any]]:
        """As :meth:`JobManager.runs`, within this scope's folders."""
        return self.base.runs(folder, allowed_roots=self.allowed_roots, roots_hint=self.roots_hint)

    def undo(self, folder: Any, run_id: str | None = None) -> dict[str, Any]:
        """As :meth:`JobManager.undo`, within this scope's folders."""
        return self.base.undo(folder, run_id, allowed_roots=self.allowed_roots, roots_hint=self.roots_hint)

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """As :meth:`JobManager.wait`."""
        return self.base.wait(job_id, timeout)
