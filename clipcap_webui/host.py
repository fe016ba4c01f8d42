"""Host feature detection and the process-wide model manager, in one place.

Features are detected by importing what they need, never from version strings:

- Forge's memory manager: ``backend.memory_management`` (with ``load_models_gpu``) and ``backend.patcher.base``;
- Forge's UI (ForgeCanvas, Forge defaults): the ``modules_forge`` package;
- everything else is the A1111 v1.10 API, which Forge keeps (docs/hosts.md).

It reads, and never changes, the host: its flags and settings, how exposed it is, which folders batch tagging may
use. The loaded models and jobs are :mod:`clipcap_webui.models`'; the GPU etiquette is :mod:`clipcap_webui.memory`'s
(both build on this module).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib_clipcap.app.security import is_loopback_host

from . import LOG_PREFIX

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Exposure:
    """Who can reach the host's server, read from the flags that decide what it binds.

    Attributes:
        local: Only this computer (bound to a loopback address, no tunnel).
        bind: The address the server binds (``None``: every interface), for the Host-header check.
        reason: The flags that expose it (``"--listen"``, ``"--nowebui"``...), empty when local.
    """

    local: bool
    bind: str | None
    reason: str


def exposure() -> Exposure:
    """How exposed the WebUI is: ``--share``/``--ngrok`` tunnel it to the internet; ``--listen`` binds 0.0.0.0;
    ``--server-name NAME`` binds NAME (a loopback name stays local, whatever the host's own ``webui_is_non_local``
    says); ``--nowebui`` without ``--listen``/``--server-name`` serves the API on every interface (uvicorn is given
    no host, so it binds them all); else gradio binds ``$GRADIO_SERVER_NAME`` or 127.0.0.1."""
    server_name = str(cmd_opt("server_name", "") or "").strip() or None
    bind = server_name or ("0.0.0.0" if cmd_opt("listen", False) else None)
    if cmd_opt("nowebui", False):
        reason = "" if bind else "--nowebui (its API server binds every interface)"
    else:
        bind = bind or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
        reason = ""
    if bind and not is_loopback_host(bind):
        reason = f"--server-name {bind}" if server_name else ("--listen" if cmd_opt("listen", False)
                                                               else f"GRADIO_SERVER_NAME={bind}")
    for flag in ("share", "ngrok"):
        if cmd_opt(flag, None):
            reason = f"--{flag}"
    return Exposure(local=not reason, bind=bind, reason=reason)


def _setting_roots() -> list[Path]:
    text = str(opt("clipcap_batch_roots", "") or "")
    return [Path(p.strip()).expanduser() for p in re.split(r"[,\n]", text) if p.strip()]


def default_batch_roots() -> list[Path]:
    """The WebUI's own folders, where batch tagging over the HTTP API may work without a setting: its outputs
    (``<data>/outputs`` and every ``outdir_*`` setting) and ``<data>/train`` (a place for training sets)."""
    from modules import paths_internal

    data = Path(getattr(paths_internal, "data_path", ".") or ".")
    roots = [Path(getattr(paths_internal, "default_output_dir", data / "outputs")), data / "train"]
    try:
        from modules import shared

        keys = [k for k in getattr(shared.opts, "data_labels", {}) if k.startswith("outdir_")]
    except ImportError:
        keys = []
    for key in keys:
        value = str(opt(key, "") or "").strip()
        if value:  # the host resolves a relative output folder against its working folder
            folder = Path(value).expanduser()
            roots.append(folder if folder.is_absolute() else Path(getattr(paths_internal, "cwd", data)) / folder)
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique


def batch_roots(*, for_api: bool = False) -> list[Path] | None:
    """Folders batch tagging may use (``None``: batch tagging is off).

    The ``clipcap_batch_roots`` setting wins: the user named those folders. Without it:

    - the HTTP API (``for_api``) gets only the WebUI's own folders (:func:`default_batch_roots`), and only while the
      WebUI serves this computer alone (:func:`exposure`), or when ``--enable-insecure-extension-access`` says the
      user trusts whoever can reach it;
    - the Caption tab (same-origin gradio) gets every local folder while the WebUI is local; none when it is exposed
      (unless ``--enable-insecure-extension-access``) or with ``--hide-ui-dir-config``.
    """
    roots = _setting_roots()
    if roots:
        return roots
    if cmd_opt("hide_ui_dir_config", False):
        return None
    if not exposure().local and not cmd_opt("enable_insecure_extension_access", False):
        return None
    if for_api:
        return default_batch_roots()
    if os.name == "nt":
        return [Path(f"{d}:\\") for d in string.ascii_uppercase if os.path.exists(f"{d}:\\")]
    return [Path(os.sep)]


def batch_unavailable_message() -> str:
    """Why batch tagging is off here, naming what would turn it on (for the API's 503 and the tab)."""
    if cmd_opt("hide_ui_dir_config", False):
        why = "the WebUI runs with --hide-ui-dir-config"
    else:
        why = f"the WebUI is reachable from other computers ({exposure().reason})"
    return (f"batch tagging is off because {why} and no folders are set for it: name the folders it may use in "
            f"Settings > Caption (ClipCap) > Batch tagging folders (clipcap_batch_roots)")


def caption_exts() -> list[str]:
    """Caption-file suffixes batch tagging may write: the defaults plus the ``clipcap_caption_exts`` setting."""
    from lib_clipcap.batch.jobs import DEFAULT_CAPTION_EXTS, parse_caption_exts
    from lib_clipcap.options_table import OptionError

    exts = list(DEFAULT_CAPTION_EXTS)
    try:
        extra = parse_caption_exts(str(opt("clipcap_caption_exts", "") or ""))
    except OptionError as e:
        log.warning("%s ignored the caption suffixes setting: %s", LOG_PREFIX, e)
        extra = []
    return exts + [e for e in extra if e.lower() not in exts]
