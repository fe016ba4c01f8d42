"""Which host the double imitates: ``WEBUI_DOUBLE_MODE`` = ``a1111`` (default), ``forge``, ``neo`` (Forge Neo) or
``classic`` (Forge Classic), read when the modules are imported.

``FORGE`` is true for the three Forge-derived hosts (ForgeCanvas, Forge's ``ToolButton``, the main thread, script
folders kept on ``sys.path``); ``NEO`` / ``CLASSIC`` name the two Haoming02/sd-webui-forge-classic branches.

Neo and Classic removed modules that A1111 and Forge have (``modules.interrogate``, ``modules.deepbooru``,
``modules.hypernetworks``; Classic also has no ``backend`` package: its memory manager is the old Forge backend's
``ldm_patched.modules.model_management``). The double's files for them stay in the tree, so :class:`_Removed` (a
``sys.meta_path`` finder, installed once) makes importing them fail as on the real host, while the mode says so.
"""

import importlib
import os
import sys

MODE = os.environ.get("WEBUI_DOUBLE_MODE", "a1111")
NEO = MODE == "neo"
CLASSIC = MODE == "classic"
FORGE = MODE in ("forge", "neo", "classic")

# What each host lacks, as (module prefix) names: importing one raises ModuleNotFoundError, as on the real host.
REMOVED = {
    "a1111": ("backend", "modules_forge", "ldm_patched"),
    "forge": ("ldm_patched",),
    "neo": ("modules.interrogate", "modules.deepbooru", "modules.hypernetworks", "ldm_patched"),
    "classic": ("modules.interrogate", "modules.deepbooru", "modules.hypernetworks", "backend"),
}


def removed(name: str, mode: str | None = None) -> bool:
    """True when ``name`` (a dotted module name) does not exist in ``mode`` (default: the current one)."""
    mode = mode or os.environ.get("WEBUI_DOUBLE_MODE", "a1111")
    return any(name == p or name.startswith(p + ".") for p in REMOVED.get(mode, ()))


class _Removed:
    """Refuses the modules the running mode lacks; looks at the environment on every import, so it follows the
    double's boots and shutdowns (which set and restore ``WEBUI_DOUBLE_MODE``) without being removed."""

    def find_spec(self, name, path=None, target=None):
        if os.environ.get("WEBUI_DOUBLE_MODE") and removed(name):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


if not any(type(f).__name__ == "_Removed" for f in sys.meta_path):
    sys.meta_path.insert(0, _Removed())


def memory_management():
    """The memory manager of a Forge-derived mode: ``backend.memory_management`` (Forge, Neo) or
    ``ldm_patched.modules.model_management`` (Classic)."""
    return importlib.import_module("ldm_patched.modules.model_management" if CLASSIC else "backend.memory_management")
