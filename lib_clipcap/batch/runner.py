"""The batch-tagging pipeline: :func:`run_tagging`.

::

    discover -> plan (caption path, collisions, journal / existing-caption skips: all before any decoding)
      -> worker processes: read + decode + preprocess (loader.py)     \\  overlap: workers decode batch n+2 while
      -> model thread: caption_pixels on the device, batch by batch    |  the model captions n+1 and the writer
         (content with tags: one CLIP encoding feeds the caption and   |
         the tags, lib_clipcap.tags)                                   |
      -> writer thread: post-process, journal (fsync), atomic writes,  /  thread fsyncs batch n
         manifest rows, progress

Only complete caption files ever appear (temporary file + rename), the journal makes an interrupted run resume
exactly where it stopped, and a bad file fails alone with its reason.

Everything around the captioning itself (discovery, planning, locks, journals, manifests, the writer) is
:func:`execute_run`, which takes the captioning stage as a function; :func:`run_tagging` plugs in the local stage
(decoding workers + the model in this process) and :mod:`lib_clipcap.distributed` a Ray Data pipeline, so both
engines write, skip, resume and report exactly alike.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

from ..fileio import atomic_write_many
from .discover import Discovery, check_allowed, discover
from .errors import BatchError, BatchLockedError
from .journal import JOURNAL_NAME, Journal, run_signature, sha256_bytes
from .runs import STATE_DIR, FileRecord, RunLog, StateFolder, new_run_id
from .loader import default_workers, iterate_batches
from .lock import LOCK_NAME, FolderLock
from .options import FileOutcome, TagFailure, TagOptions, TagSummary
from .plan import Task, journal_root, plan_tasks, remove_stale_temps
from .policy import clean_caption, compose, decorate, with_tags
from .writer import Manifest, check_manifest_file

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]
SessionFn = Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass
class RunProgress:
    """Where a run stands, for progress bars and job status.

    Rates count only files that went through the model since captioning started: files a resumed run skips, or
    that keep their caption, are not work done, so counting them would promise an ETA the run cannot keep.

    Attributes:
        done, total: Files settled (skipped, failed or written) of all files found.
        processed, to_process: Files captioned (written or failed at the model) of those that need it.
        images_per_s: ``processed`` per second since captioning started (``None`` before the first batch).
        eta_s: Seconds left for ``to_process - processed`` at that rate (``None`` without a rate).
        current: The last file settled.
    """

    done: int = 0
    total: int = 0
    processed: int = 0
    to_process: int = 0
    images_per_s: float | None = None
    eta_s: float | None = None
    current: str = ""


ProgressInfoFn = Callable[[RunProgress], None]


class Recorder:
    """Counts outcomes, keeps failures, forwards to callbacks, the manifest and any extra sinks. Thread-safe.

    A sink is any object with ``write(outcomes)`` (e.g. the Ray engine's Parquet manifest).
    """

    def __init__(self, summary: TagSummary, progress: ProgressFn | None, on_file: Callable | None,
                 keep_plan: bool, on_progress: ProgressInfoFn | None = None, preview: bool = False) -> None:
        self.summary = summary
        self.progress = progress
        self.on_file = on_file
        self.on_progress = on_progress
        self.keep_plan = keep_plan
        self.preview = preview  # write_batch reports the text it would write and writes nothing
        self.done = 0
        self.processed = 0  # files that went through decoding and the model (for images/s)
        self.to_process = 0
        self._t_proc: float | None = None
        self.manifest: Manifest | None = None
        self.sinks: list[Any] = []
        self._lock = threading.Lock()

    def start_processing(self, count: int) -> None:
        """Captioning of ``count`` files starts now: the clock of the rate and ETA."""
        self.to_process = count
        self._t_proc = time.perf_counter()
        self._report("")

    def snapshot(self, current: str = "") -> RunProgress:
        """The run's :class:`RunProgress` now."""
        rate = eta = None
        if self._t_proc is not None and self.processed:
            elapsed = time.perf_counter() - self._t_proc
            rate = self.processed / elapsed if elapsed > 0 else None
            if rate:
                eta = max(0, self.to_process - self.processed) / rate
        return RunProgress(self.done, self.summary.total, self.processed, self.to_process, rate, eta, current)

    def _report(self, current: str) -> None:
        if self.on_progress is not None:
            self.on_progress(self.snapshot(current))

    def record(self, outcomes: Sequence[FileOutcome], *, processed: bool = False) -> None:
        with self._lock:
            if processed:
                self.processed += len(outcomes)
            if self.manifest is not None:
                self.manifest.write(outcomes)
            for sink in self.sinks:
                sink.write(outcomes)
            for o in outcomes:
                s = self.summary
                setattr(s, o.tally, getattr(s, o.tally) + 1)
                if o.tally == "failed":
                    s.failures.append(TagFailure(o.path, o.reason))
                elif o.status == "skipped":
                    if o.category == "resumed":
                        s.resumed += 1
                    else:
                        s.kept += 1
                if self.keep_plan:
                    s.plan.append(o)
                self.done += 1
                if self.on_file is not None:
                    self.on_file(o)
                if self.progress is not None:
                    self.progress(self.done, s.total, o.path)
            if outcomes:
                self._report(outcomes[-1].path)


def _as_session(captioner: Any) -> SessionFn:
    if hasattr(captioner, "caption_pixels"):
        return lambda: contextlib.nullcontext(captioner)
    if callable(captioner):
        return captioner
    raise TypeError(f"captioner must be a Captioner (or BlindGuesser) or a callable returning a context manager "
                    f"that yields one; got {type(captioner).__name__}")


def model_options(model: Any, options: TagOptions) -> tuple[Any, dict[str, Any]]:
    """The model's decoding options for ``options``, and extra keywords for its ``caption_pixels``.

    Every captioner's ``decoding_options`` takes the options table's names (``decoding``, ``beam_size``,
    ``num_candidates``, ...; SBG models read ``num_candidates`` as their ``top_k_candidates``). ``options`` checked
    them when it was built, so they are passed on as they are.

    Raises:
        DecodingError, ClipCapError: settings the model cannot decode with.
    """
    kw = options.decoding_settings()
    extra = {"rerank": kw.pop("rerank")} if "rerank" in kw else {}
    return model.decoding_options(**kw), extra


# ------------------------------------------------------------------------------------------------------- writing
def own_texts(res: Any, options: TagOptions) -> tuple[str, list[Any], str]:
    """The cleaned caption and the chosen tags of one model result, or why there is nothing to write.

    Returns:
        ``(cleaned caption, tags, "")``, or ``("", [], reason)`` when the result gives nothing to write: an empty
        caption after post-processing (a run that writes captions), or no tag at all (``content="tags"``). With
        ``caption+tags`` and no tag reaching the threshold, the tags are empty and the caption is written alone.
    """
    caption = clean_caption(res.text, options) if options.writes_caption else ""
    if options.writes_caption and not caption:
        return "", [], f"the caption is empty after post-processing (model said {res.text!r})"
    tags = list(getattr(res, "tags", None) or ())
    if options.content == "tags" and not tags:
        return "", [], ("no tag reached the threshold (lower tag_threshold, or use a vocabulary with tags for such "
                        "images)")
    return caption, tags, ""


def _scored(tags: Sequence[Any]) -> list[tuple[str, float | None]]:
    """``[(tag, score), ...]`` for the manifests."""
    return [(t.tag, None if t.score is None else float(t.score)) for t in tags]


def write_batch(tasks: Sequence[Task], batch: Any, results: dict[int, Any], options: TagOptions,
                recorder: Recorder) -> None:
    """Post-process, back up, record, journal, write and report one captioned batch (runs in the writer thread).

    Every file of a task (:attr:`Task.targets <lib_clipcap.batch.plan.Task.targets>`: the caption file, and with
    ``tags_file`` the ``.tags`` file) goes through the same steps; a file that cannot be written fails its image (the
    reason names the file when the image has several), the others are written.

    Args:
        tasks: The run's tasks.
        batch: Has ``indices`` (positions in ``tasks``) and ``errors`` (position -> why that file failed before the
            model), like :class:`~lib_clipcap.batch.loader.LoadedBatch`.
        results: Position -> the model's result (``ok``, ``error``, ``text``, ``score``, ``keywords``; ``tags``
            with tags).
    """
    outcomes: dict[int, FileOutcome] = {}
    # files to write: (pos, target, bytes, own segment, old bytes); per position, what the outcome reports (the
    # caption file's own text, the result, the tags) and why some of its files were not written
    pending: list[tuple[int, Any, bytes, str, bytes | None]] = []
    made: dict[int, tuple[str, Any, list[Any]]] = {}
    problems: dict[int, list[str]] = {}
    made_dirs: dict[Path, str | None] = {}
    for pos in batch.indices:
        task = tasks[pos]
        path, out_s = os.fspath(task.item.path), os.fspath(task.output)
        if pos in batch.errors:
            outcomes[pos] = FileOutcome(path, "failed", out_s, batch.errors[pos])
            continue
        res = results[pos]
        if not res.ok:
            outcomes[pos] = FileOutcome(path, "failed", out_s, res.error or "captioning failed")
            continue
        caption, tags, why = own_texts(res, options)
        if why:
            outcomes[pos] = FileOutcome(path, "failed", out_s, why)
            continue
        names = [t.tag for t in tags]
        texts = []  # (target, its own text before decoration, own segment, file content)
        for target in task.targets:
            body = with_tags(caption, names, options, target.content)
            own = decorate(body, options)
            texts.append((target, body, own, compose(target.user if target.action in ("append", "prepend") else None,
                                                     own, options)))
        shown = with_tags(caption, names, options, options.outputs()[0][1])  # the caption file's own text
        made[pos] = (shown, res, tags)
        if recorder.preview:
            tags_target = task.tags_target()
            outcomes[pos] = FileOutcome(
                path, "would_write", out_s, task.note, shown, res.score, list(res.keywords) if res.keywords else None,
                text=texts[0][3], tags=_scored(tags) if options.writes_tags else None,
                tags_output=os.fspath(tags_target.output) if tags_target is not None else None,
                tags_text=next((t for tg, *_, t in texts if tg is tags_target), None) if len(texts) > 1 else None)
            continue
        many = len(task.targets) > 1

        def problem(target: Any, reason: str) -> None:
            problems.setdefault(pos, []).append(f"{target.output.name}: {reason}" if many else reason)

        for target, body, own, text in texts:
            if not body.strip():  # caption+tags with tags_file and no tag at the threshold: nothing for the .tags
                problem(target, "no tag reached the threshold (lower tag_threshold, or use a vocabulary with tags "
                                "for such images); the file is not written")
                continue
            # The file must still be what the plan saw: a caption edited while the run went on is the user's newer
            # text.
            try:
                old = target.output.read_bytes() if target.before is not None else None
            except OSError as e:
                problem(target, f"cannot read the existing caption file: {e.strerror or e}")
                continue
            if (sha256_bytes(old) if old is not None else None) != target.before or (
                    target.before is None and os.path.lexists(target.output)):
                problem(target, "the caption file changed while the run was going; left as it is (rerun to caption "
                                "it)")
                continue
            folder = target.output.parent
            if folder not in made_dirs:  # mirrored outputs: create the folder once
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    made_dirs[folder] = None
                except OSError as e:
                    made_dirs[folder] = f"cannot create the folder {folder}: {e.strerror or e}"
            if made_dirs[folder]:
                problem(target, made_dirs[folder])
                continue
            pending.append((pos, target, text.encode("utf-8"), own, old))
    # Backups, then the run record, then the journal (each fsynced), then the renames: see runs.py and journal.py
    # for why this order makes every crash point safe and every write reversible.
    by_log: dict[int, tuple[RunLog, list]] = {}
    by_journal: dict[int, tuple[Journal, list]] = {}
    for pos, target, data, own, old in pending:
        task = tasks[pos]
        if task.log is not None:
            if old is not None:
                task.log.backup(old)
            appends = target.action in ("append", "prepend")
            rec = FileRecord(task.log.run_id, task.journal.key(target.output),
                             "created" if target.before is None else "changed", target.before, sha256_bytes(data),
                             own, (target.user or "") if appends else "", tuple(options.triggers),
                             options.existing if target.before is not None else "new")
            by_log.setdefault(id(task.log), (task.log, []))[1].append(rec)
        if task.journal is not None:
            rec = {"out": task.journal.key(target.output), "image": os.fspath(task.item.rel), "size": task.size,
                   "mtime_ns": task.mtime_ns, "sha256": sha256_bytes(data)}
            by_journal.setdefault(id(task.journal), (task.journal, []))[1].append(rec)
    for log_, records in by_log.values():
        log_.record(records)
    for journal, records in by_journal.values():
        journal.append(records)
    errors = write_files([(target.output, data) for _, target, data, *_ in pending])
    written: dict[int, list[Any]] = {}
    for (pos, target, *_), err in zip(pending, errors):
        if err is not None:
            problems.setdefault(pos, []).append(
                (f"{target.output.name}: " if len(tasks[pos].targets) > 1 else "")
                + f"cannot write the caption file: {err.strerror or err}")
        else:
            written.setdefault(pos, []).append(target)
    for pos, (shown, res, tags) in made.items():
        if pos in outcomes:
            continue
        task = tasks[pos]
        path, out_s = os.fspath(task.item.path), os.fspath(task.output)
        if pos in problems:
            outcomes[pos] = FileOutcome(path, "failed", out_s, "; ".join(problems[pos]))
            continue
        tags_target = task.tags_target()
        outcomes[pos] = FileOutcome(path, "written", out_s, "", shown, res.score,
                                    list(res.keywords) if res.keywords else None,
                                    tags=_scored(tags) if options.writes_tags else None,
                                    tags_output=os.fspath(tags_target.output) if tags_target is not None else None)
    recorder.record([outcomes[pos] for pos in batch.indices], processed=True)


def write_files(items: list[tuple[Path, bytes]]) -> list[OSError | None]:
    """Write caption files atomically; one error (or ``None``) per item. Tests replace this to simulate a read-only
    target, since they run as root and permission bits do not stop root."""
    return atomic_write_many(items)


class BatchWriter(threading.Thread):
    """Writes captioned batches in order while the model works on the next one (fsyncs are slow on real disks)."""

    def __init__(self, tasks: Sequence[Task], options: TagOptions, recorder: Recorder) -> None:
        super().__init__(name="clipcap-batch-writer", daemon=True)
        self.tasks, self.options, self.recorder = tasks, options, recorder
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None

    def run(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            if self.error is not None:
                continue  # drain without writing: the run is failing
            try:
                write_batch(self.tasks, job[0], job[1], self.options, self.recorder)
            except BaseException as e:  # noqa: BLE001 - re-raised in the model thread
                self.error = e

    def put(self, batch: Any, results: dict[int, Any]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((batch, results))

    def finish(self) -> None:
        self.queue.put(None)
        self.join()


# ----------------------------------------------------------------------------------------------------- the run
def run_tagging(options: TagOptions, captioner: Any, *, progress: ProgressFn | None = None,
                should_stop: Callable[[], bool] | None = None,
                on_file: Callable[[FileOutcome], None] | None = None,
                allowed_roots: Sequence[Path] | None = None,
                on_progress: ProgressInfoFn | None = None, model_name: str | None = None) -> TagSummary:
    """Caption every image ``options`` selects and write the caption files.

    Args:
        options: What to tag and how (see :class:`TagOptions`).
        captioner: A :class:`~lib_clipcap.captioner.Captioner` (or SBG ``BlindGuesser``), or a zero-argument callable
            returning a context manager that yields one, e.g. ``lambda: manager.using("flickr8k")``; it is entered
            once per batch, so other callers can use the model between batches.
        progress: ``progress(done, total, current_path)`` after each file (skipped and failed ones included).
        should_stop: Polled before each batch; when it returns True the run stops after the batches already
            captioned are written (``summary.stopped``); rerunning resumes.
        on_file: Called with each file's :class:`FileOutcome` (the API job keeps counts and failures this way).
        allowed_roots: Real paths of the only folders the run may read or write (job manager); ``None``: anywhere.
        on_progress: Called with a :class:`RunProgress` (rate and ETA from captioned files only) as files settle.
        model_name: The model's name, for a dry run, which never loads or enters ``captioner`` (default: its
            ``name`` attribute); it decides which journal the plan compares with.

    Returns:
        A :class:`TagSummary`.

    Raises:
        BatchInputError: an input does not exist.
        BatchLockedError: another run holds an output folder's lock.
        PathNotAllowedError: an input, output, manifest, journal or lock is outside ``allowed_roots``.
        OptionError: a manifest exists and was not written by this tool (before the model loads).
        DecodingError, ClipCapError: invalid decoding options (before any file is touched).
        OSError: the journal or a manifest cannot be written (the run stops; what was written stays valid).
        RuntimeError: the model failed on a batch, or a worker process died (the run stops; rerun to resume).
    """
    t0 = time.perf_counter()
    _check_outputs(options, allowed_roots)  # before the model loads: a refused manifest is a quick, clear error
    if options.dry_run:  # the plan needs no model: say what the policy would do in a second, not after loading
        name = model_name or getattr(captioner, "name", "") or type(captioner).__name__
        found = discover(options, allowed_roots=allowed_roots)
        return execute_run(options, name, found, lambda tasks, recorder: None, progress=progress, on_file=on_file,
                           allowed_roots=allowed_roots, started=t0, on_progress=on_progress)
    session = _as_session(captioner)
    with session() as model:  # decoding options and transform are fixed for the run; weights are used per batch
        opts, extra = model_options(model, options)
        preprocess = model.clip.preprocess
        model_name = getattr(model, "name", "") or type(model).__name__
        device = getattr(model, "device", None)
        device_type = getattr(device, "type", "cpu")
        tagger = make_tagger(model, options, allowed_roots) if options.writes_tags else None
    found = discover(options, allowed_roots=allowed_roots)

    def caption(tasks: list[Task], recorder: Recorder) -> None:
        _caption_tasks(tasks, options, session, opts, extra, preprocess, device_type, recorder, should_stop,
                       tagger)

    return execute_run(options, model_name, found, caption, progress=progress, on_file=on_file,
                       allowed_roots=allowed_roots, started=t0, on_progress=on_progress, engine="local")


#: The captioning stage of a run: caption ``tasks`` and hand each batch to :func:`write_batch` (through a
#: :class:`BatchWriter`) with ``recorder``; may stop early (files left unrecorded count as not done).
CaptionStage = Callable[[list[Task], Recorder], None]


def execute_run(options: TagOptions, model_name: str, found: Discovery, caption: CaptionStage, *,
                progress: ProgressFn | None = None, on_file: Callable[[FileOutcome], None] | None = None,
                allowed_roots: Sequence[Path] | None = None, started: float | None = None,
                sinks: Sequence[Any] = (), on_progress: ProgressInfoFn | None = None,
                engine: str = "local") -> TagSummary:
    """Everything of a run but the captioning: journals, locks, plan, stale temporary files, manifests, summary.

    Args:
        options: The run's options.
        model_name: Goes into the journal signature and the manifests.
        found: The images (from :func:`~lib_clipcap.batch.discover.discover`).
        caption: The captioning stage, called once with the tasks left to caption (not in a dry run, not when
            nothing is left).
        progress, on_file, allowed_roots: As for :func:`run_tagging`.
        started: ``time.perf_counter()`` when the run started (default: now).
        sinks: Extra manifests (``write(outcomes)``, ``close()``), written like the JSONL/CSV ones and closed at the
            end; not used in a dry run.
        on_progress: As for :func:`run_tagging`.
        engine: Recorded in the run record (``local`` / ``ray``).

    Returns:
        The :class:`TagSummary`.
    """
    t0 = time.perf_counter() if started is None else started
    writes = options.writes
    summary = TagSummary(dry_run=not writes, model=model_name)
    summary.total = len(found.items) + len(found.failures)
    signature = run_signature(options.signature_fields(), model_name)
    roots = list(dict.fromkeys(journal_root(i, options) for i in found.items))
    _check_run_files(roots, allowed_roots)
    journals = {root: Journal(root, signature, resume=options.resume).load() for root in roots}
    states = {root: StateFolder(root, allowed_roots) for root in roots}
    for state in states.values():
        state.check()  # a symlinked or foreign state folder is refused before anything is written
    recorder = Recorder(summary, progress, on_file, keep_plan=not writes, on_progress=on_progress,
                        preview=bool(options.preview))
    run_id = new_run_id()
    logs: dict[Path, RunLog] = {}
    with contextlib.ExitStack() as stack:
        if writes:
            for root in journals:
                stack.enter_context(_lock(root))
            for journal in journals.values():
                journal.load()  # again, under the lock: another run may have finished since the first look
            summary.journals = [os.fspath(j.path) for j in journals.values()]
            info = {"options": options.to_dict(), "model": model_name, "engine": engine, "signature": signature}
            logs = {root: RunLog(states[root], run_id, info, options.keep_runs) for root in roots}
        histories = {root: state.history() for root, state in states.items()}
        tasks, settled = plan_tasks(found.items, options, journals, allowed_roots, histories)
        for t in tasks:
            t.log = logs.get(journal_root(t.item, options))
        settled = [FileOutcome(f.path, "failed", None, f.reason) for f in found.failures] + settled
        if options.dry_run:
            recorder.record(settled + [FileOutcome(os.fspath(t.item.path), "would_write", os.fspath(t.output),
                                                   t.note) for t in tasks])
        elif options.preview:
            recorder.record(settled)
            shown = tasks[: options.preview]
            summary.total = len(settled) + len(shown)  # the preview's files, not the whole set
            if shown:
                recorder.start_processing(len(shown))
                caption(shown, recorder)
        else:
            recorder.manifest = stack.enter_context(contextlib.closing(Manifest(
                Path(options.manifest_jsonl) if options.manifest_jsonl else None,
                Path(options.manifest_csv) if options.manifest_csv else None, model=model_name)))
            for sink in sinks:
                recorder.sinks.append(stack.enter_context(contextlib.closing(sink)))
            recorder.record(settled)
            if tasks:
                remove_stale_temps(tasks, list(journals.values()))
                for journal in {id(t.journal): t.journal for t in tasks if t.journal}.values():
                    journal.open()
                    stack.callback(journal.close)
                recorder.start_processing(len(tasks))
                failed = True
                try:
                    caption(tasks, recorder)
                    failed = False
                finally:
                    _finish_logs(logs, summary, recorder, failed)
    summary.elapsed_s = time.perf_counter() - t0
    if writes:
        summary.images_per_s = recorder.snapshot().images_per_s or 0.0
    summary.stopped = recorder.done < summary.total
    log.info("batch tagging: %s in %.1f s", summary.line(), summary.elapsed_s)
    return summary


def _finish_logs(logs: dict[Path, RunLog], summary: TagSummary, recorder: Recorder, failed: bool) -> None:
    """Close each root's run record with the run's state and counts; report its id and what retention dropped."""
    state = "failed" if failed else ("stopped" if recorder.done < summary.total else "done")
    counts = {"written": summary.written, "resumed": summary.resumed, "kept": summary.kept, "failed": summary.failed}
    for root, run_log in logs.items():
        try:
            run_log.finish(state, counts)
        except OSError as e:  # the files and their records are written; only the closing state is missing
            log.warning("cannot close the run record of %s in %s: %s", run_log.run_id, root, e)
        if run_log.started:
            summary.run_ids[os.fspath(root)] = run_log.run_id
            summary.pruned_runs.extend(run_log.pruned)


def _check_outputs(options: TagOptions, allowed_roots: Sequence[Path] | None) -> None:
    """Outputs inside the allowed folders (when restricted), and manifests that are new or an earlier run's."""
    for path, what in ((options.output_dir, "output folder"), (options.manifest_jsonl, "manifest"),
                       (options.manifest_csv, "manifest")):
        if path:
            check_allowed(os.path.abspath(path), allowed_roots, what)
    for path, kind in ((options.manifest_jsonl, "jsonl"), (options.manifest_csv, "csv")):
        if path:
            check_manifest_file(os.path.abspath(path), kind, shown=path)


def _check_run_files(roots: Sequence[Path], allowed_roots: Sequence[Path] | None) -> None:
    """Journals and locks are read and written too: the path rule applies to them as to captions."""
    for root in roots:
        for name, what in ((JOURNAL_NAME, "journal"), (LOCK_NAME, "lock file"), (STATE_DIR, "state folder")):
            check_allowed(Path(root) / name, allowed_roots, what)


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """Create the output root if needed and hold its lock; a folder we cannot write is a clear, fatal error."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(root).acquire()
    except BatchLockedError:
        raise
    except OSError as e:
        raise BatchError(f"cannot create the lock file in {root} ({e.strerror or e}); the folder must be writable "
                         f"(or write the captions elsewhere with output_dir)") from e
    try:
        yield
    finally:
        lock.release()


def make_tagger(model: Any, options: TagOptions, allowed_roots: Sequence[Path] | None = None) -> Any:
    """The :class:`lib_clipcap.tags.Tagger` of a run with tags: ``options.tag_vocabulary`` (default ``general``)
    ranked by the model's CLIP, text features from the models folder's cache.

    Raises:
        PathNotAllowedError: a vocabulary file outside ``allowed_roots`` (bundled names are always allowed).
        MissingFileError, TagVocabularyError: a vocabulary cannot be found or read (before any file is touched).
        OptionError: ``tag_category_limits`` names a category the vocabulary lacks.
        ClipCapError: the model has no CLIP.
    """
    from ..options_table import OptionError
    from ..tags import Tagger
    from ..tags.selection import TagOptionError
    from ..tags.vocabulary import GENERAL_NAME, is_bundled_name

    specs = list(options.tag_vocabulary) or [GENERAL_NAME]
    if allowed_roots is not None:  # the API: a vocabulary file is read like an input, only inside the allowed folders
        for spec in specs:  # (JobManager.check_options refused others already; this holds for direct callers)
            if not is_bundled_name(spec):
                check_allowed(os.path.expanduser(spec), allowed_roots, "tag vocabulary")
    tagger = Tagger(model, specs if len(specs) > 1 else specs[0])
    try:  # a misspelt category: now, under the field's name, not at every batch
        options.tag_selection().check_categories(tagger.vocabulary)
    except TagOptionError as e:
        raise OptionError("tag_category_limits", options.tag_category_limits, e.reason) from None
    return tagger


@dataclass
class TaggedResult:
    """A caption result (or an empty one, for ``content="tags"``) with the image's tags."""

    result: Any
    tags: list[Any]

    ok = property(lambda self: self.result.ok)
    error = property(lambda self: self.result.error)
    text = property(lambda self: self.result.text)
    score = property(lambda self: self.result.score)
    keywords = property(lambda self: getattr(self.result, "keywords", None))


def caption_and_tag_pixels(model: Any, tagger: Any, pixels: Any, opts: Any, extra: dict[str, Any],
                           options: TagOptions, selection: Any) -> list[TaggedResult]:
    """Caption (unless ``content="tags"``) and tag one batch of preprocessed pixels with one CLIP encoding: a
    :class:`~lib_clipcap.captioner.Captioner`'s raw image features feed both. Another model (SBG, which encodes its
    own normalised features) captions on its own, and the tags cost a second encoding there."""
    from ..captioner import Captioner
    from ..results import CaptionResult

    with getattr(model, "_lock", contextlib.nullcontext()):
        feats = model.clip.encode_images(pixels)
    if not options.writes_caption:
        captions = [CaptionResult(text="", score=None) for _ in range(len(feats))]
    elif isinstance(model, Captioner):
        captions = model.caption_features(feats, opts, **extra)
    else:
        captions = model.caption_pixels(pixels, opts, **extra)
    return [TaggedResult(c, t) for c, t in zip(captions, tagger.tag_features(feats, selection))]


def _caption_tasks(tasks: list[Task], options: TagOptions, session: SessionFn, opts: Any, extra: dict[str, Any],
                   preprocess: Callable, device_type: str, recorder: Recorder,
                   should_stop: Callable[[], bool] | None, tagger: Any = None) -> None:
    """Decode in workers, caption batch by batch, hand results to the writer thread."""
    batch_size = options.batch_size or (16 if device_type == "cpu" else 64)
    workers = options.workers if options.workers is not None else default_workers(device_type, len(tasks), batch_size)
    log.info("captioning %d images: batch size %d, %d worker processes", len(tasks), batch_size, workers)
    selection = options.tag_selection() if tagger is not None else None
    writer = BatchWriter(tasks, options, recorder)
    writer.start()
    batches = iterate_batches([os.fspath(t.item.path) for t in tasks], preprocess, batch_size=batch_size,
                              workers=workers, pin_memory=device_type == "cuda", max_pixels=options.max_pixels)
    try:
        for batch in batches:
            if should_stop is not None and should_stop():
                log.info("batch tagging stopped on request")
                break
            results: dict[int, Any] = {}
            if batch.ok:
                with session() as model:
                    if tagger is None:
                        captions = model.caption_pixels(batch.pixels, opts, **extra)
                    else:
                        captions = caption_and_tag_pixels(model, tagger, batch.pixels, opts, extra, options,
                                                          selection)
                results = dict(zip(batch.ok, captions))
            writer.put(batch, results)
    finally:
        batches.close()  # stop the workers before waiting for the last writes
        writer.finish()
    if writer.error is not None:
        raise writer.error
