"""The process-wide model manager and batch-job queue of the extension, and their life across UI reloads.

The model cache is :func:`lib_clipcap.app.service.default_manager`: it lives in a package module, so a WebUI "Reload UI"
(which re-imports the script files as new module objects) finds the same manager and the same loaded models. The
manager uses the host's device policy (:mod:`clipcap_webui.memory`) and the folders and settings :mod:`clipcap_webui.host`
reads.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from . import LOG_PREFIX, host
from .memory import make_policy

log = logging.getLogger(__name__)

#: Seconds a "Reload UI" has to re-import the scripts before the models of an unloaded extension are freed.
UNLOAD_GRACE_S = 120.0

_adopt_lock = threading.Lock()
_pending_free: threading.Timer | None = None
_jobs: tuple[Any, Any] | None = None  # (manager, the JobManager whose queue every face's scope shares)


def get_manager() -> Any:
    """The process-wide :class:`~lib_clipcap.app.service.ModelManager`, with the host's device policy.

    Created on first use; recreated (models unloaded) when the models-folder setting changed.
    """
    from lib_clipcap.app import service

    want = host.models_dir()
    mgr = service.default_manager(models_dir=want, policy=make_policy(), max_loaded=1)
    if mgr.models_dir != want:
        log.info("%s models folder changed to %s; unloading models", LOG_PREFIX, want)
        service.reset_default_manager()
        mgr = service.default_manager(models_dir=want, policy=make_policy(), max_loaded=1)
    return mgr


def get_job_manager(*, for_api: bool = False) -> Any:
    """The batch-tagging jobs of the Caption tab, or (``for_api``) of the HTTP API; ``None``: off for that face.

    Both are views (:class:`~lib_clipcap.batch.jobs.JobScope`) with their own folders (:func:`clipcap_webui.host.batch_roots`) over one
    queue per model manager, kept across UI reloads like the models (a running job keeps going), so jobs from the
    tab and the API still run one at a time.
    """
    global _jobs
    roots = host.batch_roots(for_api=for_api)
    if roots is None:
        return None
    try:
        from lib_clipcap.batch.jobs import JobManager
    except ImportError:
        return None
    manager = get_manager()
    with _adopt_lock:
        if _jobs is None or _jobs[0] is not manager:
            _jobs = (manager, JobManager(manager, []))
        queue = _jobs[1]
    return queue.scope(roots, caption_exts=host.caption_exts(),
                       caption_exts_hint="Settings > Caption (ClipCap) > Caption file suffixes (clipcap_caption_exts)",
                       roots_hint=host.BATCH_ROOTS_HINT)


def adopt() -> None:
    """Called when a script file is (re-)imported: keep the loaded models (cancel a pending free)."""
    global _pending_free
    with _adopt_lock:
        if _pending_free is not None:
            _pending_free.cancel()
            _pending_free = None


def script_unloaded(grace_s: float | None = None) -> None:
    """``on_script_unloaded``: free the models unless the scripts come back within ``grace_s`` seconds.

    A "Reload UI" unloads the scripts and imports them again at once; they call :func:`adopt` and the models stay
    loaded. When the extension was disabled, nothing adopts them and they are freed (the VRAM and RAM come back).
    ``grace_s=0`` frees at once.
    """
    global _pending_free
    grace = UNLOAD_GRACE_S if grace_s is None else grace_s
    with _adopt_lock:
        if _pending_free is not None:
            _pending_free.cancel()
        if grace <= 0:
            _pending_free = None
            _free()
            return
        _pending_free = threading.Timer(grace, _free_orphaned)
        _pending_free.daemon = True
        _pending_free.start()


def _free_orphaned() -> None:
    global _pending_free
    with _adopt_lock:
        _pending_free = None
        _free()
    log.info("%s extension unloaded; models freed", LOG_PREFIX)


def _free() -> None:  # with _adopt_lock held
    global _jobs
    from lib_clipcap.app import service

    _jobs = None
    service.reset_default_manager()

