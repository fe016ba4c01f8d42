"""Host feature detection and the process-wide model manager, in one place.

Which host is running and what it offers (:func:`host_info`), detected from what it ships, never assumed:

- **A1111** (v1.10): no ``modules_forge`` package; its GPU etiquette is ``modules.lowvram`` + ``modules.devices``;
- **Forge** (lllyasviel, f2): ``modules_forge`` and the memory manager ``backend.memory_management`` (with
  ``load_models_gpu``) + ``backend.patcher.base.ModelPatcher``;
- **Forge Neo** (Haoming02/sd-webui-forge-classic, branch ``neo``): ``modules_forge.forge_version.version == "neo"``
  and its rewritten ``backend.memory_management`` / ``backend.patcher.base`` (ComfyUI's, same calls);
- **Forge Classic** (same repository, branch ``classic``): ``modules_forge`` on the old Forge backend,
  ``ldm_patched.modules.model_management`` + ``ldm_patched.modules.model_patcher.ModelPatcher``.

Neo and Classic removed ``modules.interrogate``, ``modules.deepbooru``, the interrogate API models, hypernetworks and
a number of flags and settings, so every host module, attribute, flag and setting is read defensively
(:func:`module`, :func:`cmd_opt`, :func:`opt`), and :data:`CAPABILITIES` declares, per host, every host attribute the
extension touches (tests/host/test_host_capabilities.py fails on any other). docs/hosts.md has the sources.

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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib_clipcap.app.security import is_loopback_host

from . import LOG_PREFIX

log = logging.getLogger(__name__)

HOSTS = ("a1111", "forge", "neo", "classic")
LABELS = {"a1111": "AUTOMATIC1111", "forge": "Forge", "neo": "Forge Neo", "classic": "Forge Classic"}

# Every host attribute the extension touches, per host: {module: {attribute, ...}} (``"*"``: the module's own name is
# only imported). A host's column lists only what that host has (read from its source, docs/hosts.md); an attribute
# read defensively (``getattr(..., default)``) on a host that lacks it is still listed where it exists.
_SCRIPT_API = {
    "modules": {"call_queue", "errors", "infotext_utils", "paths_internal", "script_callbacks", "scripts",
                "scripts_postprocessing", "shared", "ui_components"},
    "modules.scripts": {"Script", "AlwaysVisible", "basedir", "PostprocessImageArgs", "PostprocessBatchListArgs"},
    "modules.script_callbacks": {"on_ui_settings", "on_ui_tabs", "on_after_component", "on_app_started",
                                 "on_script_unloaded", "on_image_saved", "on_before_image_saved"},
    "modules.scripts_postprocessing": {"ScriptPostprocessing", "PostprocessedImage"},
    "modules.shared": {"opts", "cmd_opts", "OptionInfo", "state", "models_path", "demo"},
    "modules.ui_components": {"ToolButton", "InputAccordion"},
    "modules.infotext_utils": {"image_from_url_text", "create_buttons", "register_paste_params_button",
                               "ParamBinding"},
    "modules.call_queue": {"queue_lock"},
    "modules.errors": {"report"},
    "modules.paths_internal": {"models_path", "data_path", "default_output_dir", "cwd"},
}
_A1111_GPU = {
    "modules": {"devices", "lowvram"},
    "modules.devices": {"cpu", "device_interrogate", "torch_gc"},
    "modules.lowvram": {"send_everything_to_cpu"},
}
_MEMORY_API = {"load_models_gpu", "text_encoder_device", "text_encoder_offload_device", "should_use_fp16",
               "soft_empty_cache", "get_torch_device"}
_FORGE_GPU = {
    "backend.memory_management": _MEMORY_API,
    "backend.patcher.base": {"ModelPatcher"},
    "modules_forge.forge_version": {"version"},
}
_CLASSIC_GPU = {
    "ldm_patched.modules.model_management": _MEMORY_API,
    "ldm_patched.modules.model_patcher": {"ModelPatcher"},
    "modules_forge.forge_version": {"version"},
}
# Flags (``shared.cmd_opts``) read, per host; a flag a host lacks reads as its default (:func:`cmd_opt`).
_FLAGS_COMMON = {"api", "api_auth", "nowebui", "listen", "server_name", "share", "ngrok", "cors_allow_origins",
                 "cors_allow_origins_regex", "hide_ui_dir_config", "enable_insecure_extension_access", "use_cpu",
                 "no_half"}
# Host settings (``shared.opts``) read, besides the extension's own ``clipcap_*``.
_SETTINGS_COMMON = {"enable_pnginfo", "outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples",
                    "outdir_extras_samples", "outdir_txt2img_grids", "outdir_img2img_grids", "outdir_grids",
                    "outdir_save", "outdir_init_images"}


def _merge(*parts: dict) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for part in parts:
        for mod, names in part.items():
            out.setdefault(mod, set()).update(names)
    return {mod: frozenset(names) for mod, names in out.items()}


CAPABILITIES: dict[str, dict[str, frozenset[str]]] = {
    "a1111": _merge(_SCRIPT_API, _A1111_GPU),
    "forge": _merge(_SCRIPT_API, _A1111_GPU, _FORGE_GPU),  # devices/lowvram: Forge keeps them (no-op shims)
    "neo": _merge(_SCRIPT_API, _FORGE_GPU),
    "classic": _merge(_SCRIPT_API, _CLASSIC_GPU),
}
FLAGS: dict[str, frozenset[str]] = {
    "a1111": frozenset(_FLAGS_COMMON | {"lowvram", "medvram", "medvram_sdxl"}),
    "forge": frozenset(_FLAGS_COMMON | {"lowvram", "medvram", "medvram_sdxl"}),
    "neo": frozenset(_FLAGS_COMMON),
    "classic": frozenset(_FLAGS_COMMON),
}
SETTINGS: dict[str, frozenset[str]] = {h: frozenset(_SETTINGS_COMMON) for h in HOSTS}
# Modules a host does NOT have (its own source, docs/hosts.md): the extension never imports them there.
REMOVED: dict[str, frozenset[str]] = {
    "a1111": frozenset({"backend", "modules_forge", "ldm_patched"}),
    "forge": frozenset({"ldm_patched"}),
    "neo": frozenset({"modules.interrogate", "modules.deepbooru", "modules.hypernetworks", "ldm_patched"}),
    "classic": frozenset({"modules.interrogate", "modules.deepbooru", "modules.hypernetworks", "backend"}),
}


def has_module(name: str) -> bool:
    """True when the host ships module ``name`` (found without importing it; any failure to look counts as no)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, AttributeError):  # a missing parent package, or a refusing finder
        return False


def module(name: str) -> Any:
    """Host module ``name``, or ``None`` when this host has none (or it fails to import)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@dataclass(frozen=True)
class HostInfo:
    """Which host runs the extension and what it offers.

    Attributes:
        name: ``"a1111"``, ``"forge"``, ``"neo"`` or ``"classic"``.
        label: for messages ("Forge Neo").
        version: the host's own version string when it has one (``modules_forge.forge_version.version``).
        memory: the GPU etiquette it calls for: ``"a1111"`` (``lowvram`` + ``devices``), ``"backend"`` (Forge's or
            Neo's ``backend.memory_management``) or ``"ldm_patched"`` (Classic's).
        interrogator: the host has its own ``modules.interrogate`` (A1111, Forge).
    """

    name: str
    label: str
    version: str | None
    memory: str
    interrogator: bool

    @property
    def forge_ui(self) -> bool:
        """The Forge UI family (ForgeCanvas, gradio shims): Forge, Neo, Classic."""
        return self.name != "a1111"


def host_info() -> HostInfo:
    """Detect the running host (cheap: module look-ups and one tiny import; call it as often as needed)."""
    version = None
    if not has_module("modules_forge"):
        name = "a1111"
    else:
        fv = module("modules_forge.forge_version")
        version = str(getattr(fv, "version", "") or "") or None
        if (version or "").lower().startswith("neo"):
            name = "neo"
        elif has_module("ldm_patched"):  # the old Forge backend: Classic (Forge f2 and Neo have backend/ instead)
            name = "classic"
        else:
            name = "forge"
    # the manager actually there decides the etiquette: backend/ wherever it exists (a Forge tree that still carries
    # ldm_patched/ beside it keeps Forge's calls), Classic's ldm_patched only without it
    memory = "a1111" if name == "a1111" else "backend" if has_module("backend") else "ldm_patched"
    return HostInfo(name=name, label=LABELS[name], version=version, memory=memory,
                    interrogator=has_module("modules.interrogate"))


def forge_memory() -> Any:
    """The Forge-family memory manager: ``backend.memory_management`` (Forge, Neo) or Classic's
    ``ldm_patched.modules.model_management``; ``None`` on A1111 (or when it lacks ``load_models_gpu``)."""
    for name in ("backend.memory_management", "ldm_patched.modules.model_management"):
        if has_module(name.split(".")[0]):
            mm = module(name)
            if mm is not None and callable(getattr(mm, "load_models_gpu", None)):
                return mm
    return None


def forge_model_patcher() -> Any:
    """The ``ModelPatcher`` class that goes with :func:`forge_memory` (``backend.patcher.base`` or
    ``ldm_patched.modules.model_patcher``), or ``None``."""
    for name in ("backend.patcher.base", "ldm_patched.modules.model_patcher"):
        if has_module(name.split(".")[0]):
            patcher = getattr(module(name), "ModelPatcher", None)
            if patcher is not None:
                return patcher
    return None


def is_forge() -> bool:
    """True inside a Forge-family host (Forge, Neo, Classic): its UI package exists, or its memory manager does."""
    return has_module("modules_forge") or forge_memory() is not None


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


#: Where the user names the folders batch tagging and review may use, quoted when a path is refused.
BATCH_ROOTS_HINT = "Settings > Caption (ClipCap) > Batch tagging folders (clipcap_batch_roots)"


def batch_roots(*, for_api: bool = False) -> list[Path] | None:
    """Folders batch tagging and review may use (``None``: batch tagging is off).

    The ``clipcap_batch_roots`` setting wins: the user named those folders. Without it, the Caption tab and the HTTP
    API (``for_api``) alike get only the WebUI's own folders (:func:`default_batch_roots`: its outputs and
    ``<data>/train``), and only while the WebUI serves this computer alone (:func:`exposure`) or
    ``--enable-insecure-extension-access`` says the user trusts whoever can reach it; none with
    ``--hide-ui-dir-config``. The tab gets no more than the API by default: should a page ever get past the request
    guard (clipcap_webui/host_guard.py), it could still not touch a folder the user did not name. A refused path
    names the setting (:data:`BATCH_ROOTS_HINT`).
    """
    roots = _setting_roots()
    if roots:
        return roots
    if cmd_opt("hide_ui_dir_config", False):
        return None
    if not exposure().local and not cmd_opt("enable_insecure_extension_access", False):
        return None
    return default_batch_roots()


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
