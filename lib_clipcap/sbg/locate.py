"""Where a registry SBG model's files are (torch-free, so ``python -m lib_clipcap models`` stays instant).

The generator folder is found by :func:`lib_clipcap.hub.resolve_generator_folder` (the hub knows every model's
files); this module adds the SBG text-feature cache.
"""

from __future__ import annotations

from pathlib import Path

from .. import hub
from ..hub import resolve_generator_folder

__all__ = ["default_cache_dir", "resolve_generator_folder"]


def default_cache_dir(models_dir: str | Path | None = None) -> Path:
    """Where SBG text features are cached: ``<models_dir>/cache/sbg-text-features``."""
    base = Path(models_dir).expanduser() if models_dir else hub.default_models_dir()
    return base / "cache" / "sbg-text-features"
