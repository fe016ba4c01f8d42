"""Image decoding and preprocessing off the inference thread, in worker processes.

We use ``torch.utils.data.DataLoader`` rather than a hand-made ``multiprocessing`` pool because it already does what
a pool would need code for: ordered results, a bounded prefetch queue (``prefetch_factor`` batches per worker, so
memory stays flat on a 100k-image folder), tensors passed through shared memory instead of pickled bytes, a pinned
-memory thread for fast, asynchronous host-to-GPU copies, clean worker shutdown when the iterator is dropped (a
cancelled job), and an error naming the worker when one dies. Workers run a picklable dataset of file paths and the
model's (picklable) open_clip transform; each returns, per file, a tensor or the loader's error message.

On a CPU-only machine the model needs every core and decoding costs about 1% of the time, so by default no worker
processes are started there (their start-up, importing torch and open_clip, costs more than they save); a background
*thread* decodes the next batches instead, which overlaps too, because Pillow and torch release the GIL while they
decode, resize and normalise.

Start method: never plain ``fork``. The WebUI and the API server run jobs from threads, and forking a threaded
process can copy a lock held by another thread into the child, which then deadlocks. ``forkserver`` (POSIX) forks
workers from a clean single-threaded server that has preloaded torch, so workers start in milliseconds instead of
re-importing torch each; ``spawn`` elsewhere. Both only need module-level, picklable objects, which is what this
module provides.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..images import try_load_image

log = logging.getLogger(__name__)


class ImageFileDataset:
    """Map-style dataset: index -> ``(index, pixels [3, H, W] or None, error or None)``.

    Args:
        paths: Image files.
        preprocess: The model's image transform (PIL -> tensor), e.g. ``captioner.clip.preprocess``.
        max_pixels: Passed to :func:`~lib_clipcap.images.try_load_image` (oversized images fail).
    """

    def __init__(self, paths: Sequence[str], preprocess: Callable[[Any], Any], max_pixels: int | None) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        image, error = try_load_image(self.paths[index], max_pixels=self.max_pixels)
        if error is not None:
            return index, None, error
        try:
            return index, self.preprocess(image), None
        except Exception as e:  # noqa: BLE001 - a transform failing on one odd image must fail only that image
            return index, None, f"cannot preprocess the image ({type(e).__name__}: {e})"


@dataclass
class LoadedBatch:
    """One batch from the loader.

    Attributes:
        indices: Positions (in the dataset) of every file of the batch, in order.
        pixels: ``[len(ok), 3, H, W]`` for the files that loaded, or ``None`` when none did.
        ok: Positions of the files in ``pixels``, row by row.
        errors: Position -> error message for the files that did not load.
    """

    indices: list[int]
    pixels: Any = None
    ok: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)

    def pin_memory(self) -> LoadedBatch:
        # DataLoader(pin_memory=True) calls this on custom batch types, in its pin-memory thread.
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


def collate(samples: list[tuple[int, Any, str | None]]) -> LoadedBatch:
    """Stack the tensors of the files that loaded; keep the errors of the others (runs in the workers)."""
    import torch

    batch = LoadedBatch(indices=[s[0] for s in samples])
    tensors = []
    for index, pixels, error in samples:
        if error is None:
            batch.ok.append(index)
            tensors.append(pixels)
        else:
            batch.errors[index] = error
    if tensors:
        batch.pixels = torch.stack(tensors)
    return batch


def _modules_of(preprocess: Any) -> list[str]:
    """Top-level packages a worker imports to unpickle ``preprocess`` (open_clip's transforms import open_clip)."""
    objs = [preprocess, *getattr(preprocess, "transforms", ())]
    return sorted({type(o).__module__.split(".")[0] for o in objs} - {"builtins"})


#: Start method of the worker processes; ``None``: ``forkserver`` where available, else ``spawn`` (see the module
#: docstring). A host that knows better (or a test that wants speed) may set it, e.g. to ``"spawn"``.
START_METHOD: str | None = None


def _context(preprocess: Any) -> Any:
    if START_METHOD is not None:
        return multiprocessing.get_context(START_METHOD)
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        # Preloaded once in the server, so each forked worker starts with them imported (open_clip alone takes
        # seconds to import). Only effective before the server first starts; harmless afterwards.
        ctx.set_forkserver_preload(["torch", *_modules_of(preprocess), __name__])
        return ctx
    return multiprocessing.get_context("spawn")


def _ignore_sigint(worker_id: int) -> None:
    """Workers ignore Ctrl-C: the terminal sends it to the whole process group, and a worker dying of it would turn
    the CLI's graceful "stop after this batch" into a crash. The main process stops them when it is done."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_workers(device_type: str, pending: int, batch_size: int) -> int:
    """Worker processes to use when the options leave it open.

    On a GPU, decoding is the bottleneck: up to 16 workers, one core left for the inference thread. On a CPU, none
    (a decoding thread overlaps instead; see the module docstring). Runs of under two batches decode in-process:
    starting workers would cost more than it saves.
    """
    cpus = os.cpu_count() or 1
    if device_type == "cpu" or pending < 2 * batch_size or cpus < 2:
        return 0
    return max(1, min(16, cpus - 1))


def iterate_batches(paths: Sequence[str], preprocess: Callable[[Any], Any], *, batch_size: int, workers: int,
                    pin_memory: bool = False, max_pixels: int | None = None) -> Iterator[LoadedBatch]:
    """Yield :class:`LoadedBatch` es of ``paths`` in order, decoded by ``workers`` processes, or by one background
    thread when ``workers`` is 0.

    While the caller runs the model on one batch, the next ones are decoded (1-2 batches ahead per worker, 2 for the
    thread). Closing the generator stops the workers or the thread.

    Raises:
        RuntimeError: a worker process died (e.g. killed for memory); the message names it.
    """
    from torch.utils.data import DataLoader

    dataset = ImageFileDataset(paths, preprocess, max_pixels)
    if workers == 0:
        yield from _thread_prefetch(dataset, batch_size, pin_memory)
        return
    # Each worker decodes whole batches, so `workers` batches are in flight already; with many workers one more each
    # would only hold shared memory (256 ViT images are ~150 MB as float32).
    prefetch = 2 if workers < 4 else 1
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                        pin_memory=pin_memory, multiprocessing_context=_context(preprocess), prefetch_factor=prefetch,
                        persistent_workers=False, worker_init_fn=_ignore_sigint)
    it = iter(loader)
    try:
        yield from it
    finally:
        # Shut the workers down now rather than at garbage collection (a cancelled job must release them at once).
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


_END = object()


def _thread_prefetch(dataset: ImageFileDataset, batch_size: int, pin_memory: bool,
                     depth: int = 2) -> Iterator[LoadedBatch]:
    """Batches of ``dataset`` decoded by a daemon thread, at most ``depth`` ahead of the consumer."""
    out: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():  # never block for good: the consumer may have gone (cancelled run)
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for start in range(0, len(dataset), batch_size):
                batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
                if pin_memory:
                    batch.pin_memory()
                if not put(batch):
                    return
            put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(e)

    thread = threading.Thread(target=produce, name="clipcap-batch-decoder", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
