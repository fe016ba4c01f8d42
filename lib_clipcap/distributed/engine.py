"""The Ray Data engine: :func:`run_tagging_ray`.

::

    driver (this process)                                   cluster
    ---------------------                                   -------
    load the model once on the CPU: name, decoding options,
      image transform (checked before anything is touched)
    discover + plan (journal / existing-caption skips)
    ray.data.from_arrow([pos, path] blocks) ------------->  map_batches(decode_batch): CPU tasks read the file or
                                                              object, decode, preprocess -> pixels | error
                                                            map_batches(CaptionActor, ActorPoolStrategy(n)):
                                                              each actor loads the model once (num_gpus=1: its
                                                              own GPU) and captions batch after batch
    iter_batches() <--------------------------------------  text, score, keywords, tags | error, per image
    the single-machine writer: post-processing, policies,
      journal (fsync) then atomic renames, manifests

Only the driver writes, through the very code of the local engine (:func:`lib_clipcap.batch.runner.execute_run`,
:class:`~lib_clipcap.batch.runner.BatchWriter`), so a Ray run writes, skips, resumes and reports exactly like
``--engine local``; caption files are small, the driver is never the bottleneck. Fault tolerance is Ray Data's
(its defaults, which we keep): a task on a dead node is re-run (``max_retries=-1``), an actor on a dead node is
restarted elsewhere and its in-flight batches are retried (``max_restarts=-1``, ``max_task_retries=-1``), lost
intermediate blocks are rebuilt from lineage; since nothing is written until a caption reaches the driver, no
partial file can come of it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..batch.discover import discover, is_url
from ..batch.lock import FolderLock
from ..batch.options import FileOutcome, TagOptions, TagSummary
from ..batch.policy import with_tags
from ..batch.runner import (BatchWriter, Recorder, TaggedResult, caption_and_tag_pixels, execute_run, make_tagger,
                            model_options, own_texts)
from ..batch.writer import Manifest
from ..images import describe_source, try_load_image
from ..options_table import OptionError
from .options import RayOptions
from .ray_import import require_ray
from .sources import RemoteItem, make_lister, read_bytes
from .spec import ModelSpec

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]

# Blocks the path list is cut into: about one per decode batch, but not more than this (Ray's per-block overhead).
_MAX_BLOCKS = 2000


# ------------------------------------------------------------------------------------------ runs in the cluster
def decode_batch(batch: dict[str, Any], *, preprocess: Callable, shape: tuple[int, ...],
                 max_pixels: int | None) -> dict[str, Any]:
    """Ray task: read, decode and preprocess a batch of images (paths or URLs).

    Returns:
        ``pos``, ``pixels`` (float32 ``[n, *shape]``, zeros for failed rows) and ``error`` ("" when the image loaded;
        else the same message the local engine gives).
    """
    import numpy as np

    paths = [str(p) for p in batch["path"]]
    pixels = np.zeros((len(paths), *shape), dtype=np.float32)
    errors = [""] * len(paths)
    for i, path in enumerate(paths):
        source: Any = path
        if is_url(path):
            try:
                source = read_bytes(path)
            except Exception as e:  # noqa: BLE001 - a missing or unreadable object fails that image only
                errors[i] = f"cannot read {path}: {e}"
                continue
        image, error = try_load_image(source, max_pixels=max_pixels)
        if error is not None:
            # name the object, not "<bytes: N bytes>", as a local path names the file
            errors[i] = error.replace(describe_source(source), path, 1) if source is not path else error
            continue
        try:
            tensor = preprocess(image)
            pixels[i] = tensor.numpy() if hasattr(tensor, "numpy") else tensor
        except Exception as e:  # noqa: BLE001 - as the local loader: an odd image fails alone
            errors[i] = f"cannot preprocess the image ({type(e).__name__}: {e})"
    return {"pos": np.asarray(batch["pos"], dtype=np.int64), "pixels": pixels,
            "error": np.array(errors, dtype=object)}


class CaptionActor:
    """Ray actor: loads the model once, then captions the decoded batches it is given.

    Args:
        spec: The model to load.
        options: The run's options (decoding settings).
        device, dtype: Where to run it (``cuda`` is the GPU Ray assigned to this actor).
        threads: torch CPU threads (CPU actors: the CPUs reserved for them).
    """

    def __init__(self, spec: ModelSpec, options: TagOptions, device: str | None, dtype: str | None,
                 threads: int) -> None:
        import ray
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.model = spec.load(device=device, dtype=dtype)
        self.opts, self.extra = model_options(self.model, options)
        self.options = options
        # content with tags: the vocabulary's text features come from the models folder's cache (the driver's probe
        # filled it on its machine; an actor elsewhere encodes them once), one CLIP encoding feeds caption and tags
        self.tagger = make_tagger(self.model, options) if options.writes_tags else None
        self.selection = options.tag_selection() if self.tagger is not None else None
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import json

        import numpy as np
        import torch

        errors = [str(e) for e in batch["error"]]
        n = len(errors)
        texts, keywords, tags = [""] * n, [""] * n, [""] * n
        scores = np.full(n, np.nan)
        ok = [i for i, e in enumerate(errors) if not e]
        if ok:
            pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok]))
            if self.tagger is None:
                results = self.model.caption_pixels(pixels, self.opts, **self.extra)
            else:
                results = caption_and_tag_pixels(self.model, self.tagger, pixels, self.opts, self.extra,
                                                 self.options, self.selection)
            for i, res in zip(ok, results):
                if not res.ok:
                    errors[i] = res.error or "captioning failed"
                    continue
                texts[i] = res.text
                scores[i] = np.nan if res.score is None else float(res.score)
                keywords[i] = json.dumps(list(res.keywords)) if res.keywords else ""
                if self.tagger is not None:  # [[tag, category, score], ...]: the writer's Tag tuples
                    tags[i] = json.dumps([list(t) for t in res.tags])
        return {"pos": np.asarray(batch["pos"], dtype=np.int64), "text": np.array(texts, dtype=object),
                "score": scores, "keywords": np.array(keywords, dtype=object), "tags": np.array(tags, dtype=object),
                "error": np.array(errors, dtype=object), "node": np.array([self.node] * n, dtype=object)}


def decode_tasks(place: dict[str, Any], decode_cpus: float) -> int:
    """How many decode tasks may run at once: what the CPUs left by the actors hold (at least 1).

    Never equal to the number of actors: Ray Data fuses a task stage into the following actor stage when their
    remote arguments match and the task pool's size is unset or equals the actor pool's; fused, the decoding would
    run inside the actors, serially with (and on the time of) the model. A set, different size keeps them apart.
    """
    free = place["cluster_cpus"] - place["actors"] * place["cpus_per_actor"]
    n = max(1, int(free // decode_cpus)) if decode_cpus else max(1, 2 * place["actors"])
    return n + 1 if n == place["actors"] else n


# ------------------------------------------------------------------------------------------------ the driver
@contextlib.contextmanager
def _processes_ignore_ctrl_c() -> Iterator[None]:
    """Processes started inside (a private Ray's GCS, raylet and workers) ignore SIGINT.

    They share the terminal's process group, so Ctrl-C would reach them too and take the private cluster down under
    a run that was only asked to stop after the current batch. An ignored signal stays ignored across ``exec``;
    this process gets its own handler back on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def connect(ray_options: RayOptions) -> Iterator[Any]:
    """Ray, connected as ``ray_options`` says (an existing connection is used as is); disconnects what it opened."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    kw: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True}
    if ray_options.address:
        kw["address"] = ray_options.address
    else:
        for name in ("num_cpus", "num_gpus", "object_store_memory"):
            if getattr(ray_options, name) is not None:
                kw[name] = getattr(ray_options, name)
    log.info("connecting to Ray (%s)", ray_options.address or "private local instance")
    with _processes_ignore_ctrl_c():
        ray.init(**kw)
    try:
        yield ray
    finally:
        ray.shutdown()


def _placement(ray: Any, ray_options: RayOptions, spec: ModelSpec) -> dict[str, Any]:
    """Actors, GPUs / CPUs per actor and the actors' device, from the cluster's resources."""
    total = ray.cluster_resources()
    gpus, cpus = float(total.get("GPU", 0)), float(total.get("CPU", 0))
    wants_cpu = (spec.device or "").startswith("cpu")
    gpa = ray_options.gpus_per_actor
    if gpa is None:
        gpa = 1.0 if gpus >= 1 and not wants_cpu else 0.0
    cpa, dec = ray_options.cpus_per_actor, ray_options.decode_cpus
    actors = ray_options.actors
    if actors is None:
        actors = int(gpus // gpa) if gpa else int(cpus // 2)
        actors = max(1, actors)
    # The actors hold their resources for the whole run: if they took every CPU, no decode task could ever start
    # and the pipeline would wait forever. Refuse that up front.
    if actors * cpa + dec > cpus + 1e-9:
        raise OptionError("actors", actors, f"{actors} actor(s) x {cpa:g} CPU plus one decode task ({dec:g} CPU) "
                                            f"need more than the cluster's {cpus:g} CPUs, so decoding could never "
                                            f"run; use fewer actors, or lower --cpus-per-actor / --decode-cpus")
    if gpa and actors * gpa > gpus + 1e-9:
        raise OptionError("actors", actors, f"{actors} actor(s) x {gpa:g} GPU need more than the cluster's "
                                            f"{gpus:g} GPUs; use fewer actors or lower --gpus-per-actor")
    device = spec.device or ("cuda" if gpa else "cpu")
    return {"actors": actors, "gpus_per_actor": gpa, "cpus_per_actor": cpa,
            "device": device, "cluster_gpus": gpus, "cluster_cpus": cpus}


class _Pipeline:
    """Builds and runs the Ray Data pipeline for one run's images."""

    def __init__(self, spec: ModelSpec, options: TagOptions, ray_options: RayOptions, preprocess: Callable,
                 shape: tuple[int, ...], should_stop: Callable[[], bool] | None,
                 on_batch: Callable[[str, int], None] | None = None) -> None:
        self.spec, self.options, self.ray_options = spec, options, ray_options
        self.preprocess, self.shape, self.should_stop, self.on_batch = preprocess, shape, should_stop, on_batch
        self.nodes: dict[str, int] = {}

    def stream(self, paths: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Yield result batches (``pos`` = index into ``paths``) until done, or until ``should_stop()``."""
        import pyarrow as pa

        with connect(self.ray_options) as ray:
            place = _placement(ray, self.ray_options, self.spec)
            on_gpu = place["gpus_per_actor"] > 0
            batch_size = self.ray_options.batch_size or self.options.batch_size or (64 if on_gpu else 16)
            # An actor costs a model load; more actors than batches would only load models that never work.
            place["actors"] = min(place["actors"], max(1, math.ceil(len(paths) / batch_size)))
            n_decode = decode_tasks(place, self.ray_options.decode_cpus)
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = self.ray_options.progress_bars
            log.info("Ray engine: %d images, %d actor(s) x (%s GPU, %s CPU) on %s, batch %d, up to %d decode tasks; "
                     "cluster %g CPU, %g GPU", len(paths), place["actors"], place["gpus_per_actor"],
                     place["cpus_per_actor"], place["device"], batch_size, n_decode, place["cluster_cpus"],
                     place["cluster_gpus"])
            per_block = max(batch_size, math.ceil(len(paths) / _MAX_BLOCKS))
            blocks = [pa.table({"pos": pa.array(range(i, min(i + per_block, len(paths))), pa.int64()),
                                "path": pa.array(paths[i:i + per_block], pa.string())})
                      for i in range(0, len(paths), per_block)]
            ds = ray.data.from_arrow(blocks)
            ds = ds.map_batches(decode_batch, batch_size=batch_size, batch_format="numpy",
                                fn_kwargs={"preprocess": self.preprocess, "shape": self.shape,
                                           "max_pixels": self.options.max_pixels},
                                num_cpus=self.ray_options.decode_cpus, compute=ray.data.TaskPoolStrategy(size=n_decode))
            threads = max(1, int(place["cpus_per_actor"])) if not on_gpu else 0
            ds = ds.map_batches(CaptionActor, batch_size=batch_size, batch_format="numpy",
                                fn_constructor_kwargs={"spec": self.spec, "options": self.options,
                                                       "device": place["device"], "dtype": self.spec.dtype,
                                                       "threads": threads},
                                compute=ray.data.ActorPoolStrategy(size=place["actors"]),
                                num_gpus=place["gpus_per_actor"], num_cpus=place["cpus_per_actor"],
                                memory=self.ray_options.memory_per_actor)
            it = iter(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1))
            try:
                for out in it:
                    node = str(out["node"][0]) if len(out["node"]) else ""
                    self.nodes[node] = self.nodes.get(node, 0) + len(out["node"])
                    yield out
                    if self.on_batch is not None:
                        self.on_batch(node, len(out["node"]))
                    if self.should_stop is not None and self.should_stop():
                        log.info("Ray tagging stopped on request")
                        break
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()  # stops the streaming executor now, not at garbage collection


class _Batch:
    """What :func:`~lib_clipcap.batch.runner.write_batch` reads of a batch: positions and load errors."""

    def __init__(self, indices: list[int], errors: dict[int, str]) -> None:
        self.indices, self.errors = indices, errors


def _results(out: dict[str, Any]) -> tuple[_Batch, dict[int, Any]]:
    """A result batch from the cluster as the local writer's ``(batch, results)``."""
    import json

    from ..results import CaptionResult

    from ..tags.selection import Tag

    indices = [int(p) for p in out["pos"]]
    errors: dict[int, str] = {}
    results: dict[int, Any] = {}
    tags = out["tags"] if "tags" in out else [""] * len(indices)
    for pos, text, score, kw, tg, err in zip(indices, out["text"], out["score"], out["keywords"], tags, out["error"]):
        if err:
            errors[pos] = str(err)
            continue
        res = CaptionResult(text=str(text), score=None if math.isnan(score) else float(score),
                            keywords=json.loads(kw) if kw else None)
        results[pos] = TaggedResult(res, [Tag(*t) for t in json.loads(tg)]) if tg else res
    return _Batch(indices, errors), results


def _probe(spec: ModelSpec, options: TagOptions) -> tuple[str, Callable, tuple[int, ...]]:
    """Load the model here, on the CPU, once: its name, its checked decoding options, its transform and pixel shape.

    Raises:
        ClipCapError and the model loaders' errors: the model or the decoding options are wrong (before any file
        or cluster is touched).
    """
    from PIL import Image

    model = spec.load(device="cpu", dtype="fp32")
    try:
        model_options(model, options)  # DecodingError etc. now, not in every actor
        if options.writes_tags:  # a missing vocabulary or a misspelt category now, not in every actor
            make_tagger(model, options)
        name = getattr(model, "name", "") or type(model).__name__
        preprocess = model.clip.preprocess
        shape = tuple(preprocess(Image.new("RGB", (32, 32))).shape)
    finally:
        unload = getattr(model, "unload", None)
        if unload is not None:
            unload()
    return name, preprocess, shape


def _check_layout(options: TagOptions, ray_options: RayOptions) -> None:
    remote = [p for p in options.inputs if is_url(p)]
    if remote and ray_options.sidecars and not options.output_dir:
        raise OptionError("output_dir", None, f"{remote[0]} is not on a local filesystem: caption files of remote "
                                              f"images go under an output folder (--output-dir DIR); or write only "
                                              f"the manifest (--no-sidecars --manifest-parquet DIR)")
    if not ray_options.sidecars and options.existing != "skip":
        raise OptionError("existing", options.existing, "applies to caption files; without them (sidecars off) "
                                                        "leave it at skip")


def run_tagging_ray(options: TagOptions, model: Any, ray_options: RayOptions | None = None, *,
                    progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None,
                    on_file: Callable[[FileOutcome], None] | None = None,
                    on_batch: Callable[[str, int], None] | None = None,
                    on_progress: Callable[[Any], None] | None = None) -> TagSummary:
    """Caption every image ``options`` selects on a Ray cluster; write the captions like
    :func:`lib_clipcap.batch.run_tagging`.

    Args:
        options: What to tag and how (inputs may also be ``scheme://`` URLs, listed with pyarrow / fsspec).
            ``workers`` does not apply (decoding runs in Ray tasks).
        model: A registry name or a :class:`ModelSpec`; every actor loads its own copy, and this process loads it
            once on the CPU first, to check the options and get the image transform.
        ray_options: Cluster, placement and Parquet manifest settings (default: a private Ray on this machine).
        progress, should_stop, on_file: As for :func:`~lib_clipcap.batch.run_tagging`; ``should_stop`` is polled
            after each batch that comes back.
        on_batch: ``on_batch(node_id, images)`` after each batch that came back and was handed to the writer: which
            Ray node captioned it (per-node counts; the log gives the totals).
        on_progress: As for :func:`~lib_clipcap.batch.run_tagging` (a :class:`~lib_clipcap.batch.runner.RunProgress`
            with the rate and ETA of the captioned files only). Runs are recorded and undone as the local engine's.

    Returns:
        A :class:`~lib_clipcap.batch.TagSummary`, as the local engine's.

    Raises:
        RayNotInstalledError: Ray Data is not installed (the message names the install command).
        OptionError: a setting does not fit (e.g. remote images with sidecars but no output folder).
        BatchInputError, BatchLockedError, OSError, ClipCapError: as :func:`~lib_clipcap.batch.run_tagging`.
        Exception: the pipeline failed for good (e.g. the model failed on a batch); what was written stays valid
            and rerunning resumes.
    """
    t0 = time.perf_counter()
    require_ray()
    ray_options = ray_options or RayOptions()
    spec = ModelSpec.coerce(model)
    _check_layout(options, ray_options)
    if options.preview and not ray_options.sidecars:
        raise OptionError("preview", options.preview, "previews the text of caption files; with no sidecars there "
                                                      "are none: drop it or --no-sidecars")
    model_name, preprocess, shape = _probe(spec, options)
    found = discover(options, remote=make_lister(options))
    remote = next((i for i in found.items if isinstance(i, RemoteItem)), None)
    if remote is not None and ray_options.sidecars and not options.output_dir:  # e.g. URLs in a list file
        _check_layout(TagOptions(inputs=[remote.path], output_dir=None), ray_options)
    pipeline = _Pipeline(spec, options, ray_options, preprocess, shape, should_stop, on_batch)
    if ray_options.sidecars:
        summary = _run_with_sidecars(options, ray_options, model_name, found, pipeline, progress, on_file, t0,
                                     on_progress)
    else:
        summary = _run_manifest_only(options, ray_options, model_name, found, pipeline, progress, on_file, t0,
                                     on_progress)
    if pipeline.nodes:
        log.info("captioned on %d node(s): %s", len(pipeline.nodes),
                 ", ".join(f"{n[:8]}: {c}" for n, c in sorted(pipeline.nodes.items())))
    return summary


def _signature(options: TagOptions, model_name: str) -> str:
    from ..batch.journal import run_signature

    return run_signature(options.signature_fields(), model_name)


def _run_with_sidecars(options: TagOptions, ray_options: RayOptions, model_name: str, found: Any,
                       pipeline: _Pipeline, progress: ProgressFn | None, on_file: Callable | None,
                       t0: float, on_progress: Callable | None = None) -> TagSummary:
    def caption(tasks: list[Any], recorder: Recorder) -> None:
        writer = BatchWriter(tasks, options, recorder)
        writer.start()
        try:
            for out in pipeline.stream([os.fspath(t.item.path) for t in tasks]):
                writer.put(*_results(out))  # written by the writer thread while the next batch comes in
        finally:
            writer.finish()
        if writer.error is not None:
            raise writer.error

    sinks = []
    if ray_options.manifest_parquet and options.writes:
        from .manifest import ParquetManifest

        stats = {os.fspath(i.path): (i.stat().st_size, i.stat().st_mtime_ns) for i in found.items
                 if not isinstance(i.path, Path)}  # remote items know theirs; local ones are in the journal
        sinks.append(ParquetManifest(Path(ray_options.manifest_parquet), model=model_name,
                                     signature=_signature(options, model_name), options=options, stats=stats,
                                     flush_s=ray_options.parquet_flush_s,
                                     rows_per_part=ray_options.parquet_rows_per_part))
    return execute_run(options, model_name, found, caption, progress=progress, on_file=on_file, started=t0,
                       sinks=sinks, on_progress=on_progress, engine="ray")


def _run_manifest_only(options: TagOptions, ray_options: RayOptions, model_name: str, found: Any,
                       pipeline: _Pipeline, progress: ProgressFn | None, on_file: Callable | None,
                       t0: float, on_progress: Callable | None = None) -> TagSummary:
    """No caption files: every caption goes into the manifests; the Parquet manifest is also the resume record."""
    from .manifest import ParquetManifest, done_images, remove_stale_parts

    folder = Path(os.path.abspath(ray_options.manifest_parquet))
    signature = _signature(options, model_name)
    summary = TagSummary(dry_run=options.dry_run, model=model_name)
    summary.total = len(found.items) + len(found.failures)
    recorder = Recorder(summary, progress, on_file, keep_plan=options.dry_run, on_progress=on_progress)
    with contextlib.ExitStack() as stack:
        if not options.dry_run:
            folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(FolderLock(folder))  # one run per manifest folder
            remove_stale_parts(folder)
        done = done_images(folder, signature) if options.resume else {}
        settled = [FileOutcome(f.path, "failed", None, f.reason) for f in found.failures]
        todo: list[Any] = []
        stats: dict[str, tuple[int, int]] = {}
        for item in found.items:
            path = os.fspath(item.path)
            try:
                st = item.stat()
            except OSError as e:
                settled.append(FileOutcome(path, "failed", None, f"cannot read the file: {e.strerror or e}"))
                continue
            stats[path] = (st.st_size, st.st_mtime_ns)
            if done.get(path) == stats[path]:
                settled.append(FileOutcome(path, "skipped", None, f"already captioned by an earlier run (manifest "
                                                                  f"{folder.name})", category="resumed"))
            else:
                todo.append(item)
        if options.dry_run:
            recorder.record(settled + [FileOutcome(os.fspath(i.path), "would_write", None, "manifest")
                                       for i in todo])
        else:
            recorder.manifest = stack.enter_context(contextlib.closing(Manifest(
                Path(options.manifest_jsonl) if options.manifest_jsonl else None,
                Path(options.manifest_csv) if options.manifest_csv else None, model=model_name)))
            recorder.sinks.append(stack.enter_context(contextlib.closing(ParquetManifest(
                folder, model=model_name, signature=signature, options=options, stats=stats,
                flush_s=ray_options.parquet_flush_s, rows_per_part=ray_options.parquet_rows_per_part))))
            recorder.record(settled)
            if todo:
                recorder.start_processing(len(todo))
                paths = [os.fspath(i.path) for i in todo]
                for out in pipeline.stream(paths):
                    batch, results = _results(out)
                    outcomes = []
                    for pos in batch.indices:
                        path = paths[pos]
                        if pos in batch.errors:
                            outcomes.append(FileOutcome(path, "failed", None, batch.errors[pos]))
                            continue
                        res = results[pos]
                        caption, tags, why = own_texts(res, options)
                        if why:
                            outcomes.append(FileOutcome(path, "failed", None, why))
                        else:
                            text = with_tags(caption, [t.tag for t in tags], options)
                            outcomes.append(FileOutcome(
                                path, "written", None, "", text, res.score, res.keywords,
                                tags=[(t.tag, t.score) for t in tags] if options.writes_tags else None))
                    recorder.record(outcomes, processed=True)
    summary.elapsed_s = time.perf_counter() - t0
    if not options.dry_run:
        summary.images_per_s = recorder.snapshot().images_per_s or 0.0
    summary.stopped = recorder.done < summary.total
    return summary
