"""Host feature detection and the process-wide model manager, in one place.

Features are detected by importing what they need, never from version strings:

- Forge's memory manager: ``backend.memory_management`` (with ``load_models_gpu``) and ``backend.patcher.base``;
- Forge's UI (ForgeCanvas, Forge defaults): the ``modules_forge`` package;
- everything else is the A1111 v1.10 API, which Forge keeps (HOST_API.md §6).

The model cache is :func:`lib_clipcap.service.default_manager`: it lives in a package module, so a WebUI "Reload UI"
(which re-imports the script files as new module objects) finds the same manager and the same loaded models.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import string
import threading
from pathlib import Path
from typing import Any

from . import LOG_PREFIX

log = logging.getLogger(__name__)

#: Seconds a "Reload UI" has to re-import the scripts before the models of an unloaded extension are freed.
UNLOAD_GRACE_S = 120.0


def forge_memory() -> Any:
    """Forge's ``backend.memory_management`` module, or ``None`` on A1111."""
    try:
        mm = importlib.import_module("backend.memory_management")
    except ImportError:
        return None
    return mm if callable(getattr(mm, "load_models_gpu", None)) else None


def forge_model_patcher() -> Any:
    """Forge's ``backend.patcher.base.ModelPatcher`` class, or ``None``."""
    try:
        return importlib.import_module("backend.patcher.base").ModelPatcher
    except (ImportError, AttributeError):
        return None


def is_forge() -> bool:
    """True inside Forge (its UI package exists, or its memory manager does)."""
    return importlib.util.find_spec("modules_forge") is not None or forge_memory() is not None


def cmd_opt(name: str, default: Any = None) -> Any:
    """``shared.cmd_opts.<name>``, or ``default`` when the host has no such flag."""
    from modules import shared

    return getattr(getattr(shared, "cmd_opts", None), name, default)


def opt(key: str, default: Any = None) -> Any:
    """A WebUI setting, or ``default`` when unset or unregistered (``shared.opts.<key>`` raises for unknown keys)."""
    from modules import shared

    return getattr(getattr(shared, "opts", None), key, default)  # Options raises AttributeError for unknown keys


def models_path() -> str:
    """The host's models folder (``--models-dir`` or ``<data>/models``)."""
    try:
        from modules import paths_internal

        return paths_internal.models_path
    except (ImportError, AttributeError):
        from modules import shared

        return shared.models_path


def models_dir() -> Path:
    """Where ClipCap models live: the ``clipcap_models_dir`` setting, else ``<models_path>/clipcap``."""
    custom = str(opt("clipcap_models_dir", "") or "").strip()
    return Path(custom).expanduser() if custom else Path(models_path()) / "clipcap"


def batch_roots() -> list[Path] | None:
    """Folders batch tagging may use: the ``clipcap_batch_roots`` setting; else every folder when the WebUI serves
    only this machine; ``None`` (batch tagging off) when it is shared (``--listen``/``--share`` without
    ``--enable-insecure-extension-access``, the host's own rule for risky features) or ``--hide-ui-dir-config``."""
    text = str(opt("clipcap_batch_roots", "") or "")
    roots = [Path(p.strip()).expanduser() for p in re.split(r"[,\n]", text) if p.strip()]
    if roots:
        return roots
    if cmd_opt("disable_extension_access", False) or cmd_opt("hide_ui_dir_config", False):
        return None
    if os.name == "nt":
        return [Path(f"{d}:\\") for d in string.ascii_uppercase if os.path.exists(f"{d}:\\")]
    return [Path(os.sep)]


# ------------------------------------------------------------------------------------------------- model manager
_adopt_lock = threading.Lock()
_pending_free: threading.Timer | None = None
_jobs: tuple[Any, Any, Any] | None = None  # (manager, roots, JobManager)


def get_manager() -> Any:
    """The process-wide :class:`~lib_clipcap.service.ModelManager`, with the host's device policy.

    Created on first use; recreated (models unloaded) when the models-folder setting changed.
    """
    from lib_clipcap import service

    from .memory import make_policy

    want = models_dir()
    mgr = service.default_manager(models_dir=want, policy=make_policy(), max_loaded=1)
    if mgr.models_dir != want:
        log.info("%s models folder changed to %s; unloading models", LOG_PREFIX, want)
        service.reset_default_manager()
        mgr = service.default_manager(models_dir=want, policy=make_policy(), max_loaded=1)
    return mgr


def get_job_manager() -> Any:
    """The batch-tagging :class:`~lib_clipcap.batch.jobs.JobManager` (``None``: batch tagging is off here).

    One per manager and folder list, kept across UI reloads like the models (a running job keeps going).
    """
    global _jobs
    roots = batch_roots()
    if roots is None:
        return None
    try:
        from lib_clipcap.batch.jobs import JobManager
    except ImportError:
        return None
    manager = get_manager()
    key = tuple(str(r) for r in roots)
    with _adopt_lock:
        if _jobs is None or _jobs[0] is not manager or _jobs[1] != key:
            _jobs = (manager, key, JobManager(manager, roots))
        return _jobs[2]


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
    from lib_clipcap import service

    _jobs = None
    service.reset_default_manager()

