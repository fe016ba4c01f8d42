"""Importing Ray on demand, with a clear message where it is missing.

Apart from the package's ``__init__`` so that the engine can use it without importing its own package (which
re-exports the engine lazily): no import circle.
"""

from __future__ import annotations

from typing import Any

from ..errors import ClipCapError

__all__ = ["INSTALL_HINT", "RAY_REQUIREMENT", "RayNotInstalledError", "require_ray"]

#: What to install for the Ray engine (kept in step with tools/requirements-dev.txt and pyproject's ``ray`` extra).
RAY_REQUIREMENT = "ray[data]>=2.60"
INSTALL_HINT = f'pip install "{RAY_REQUIREMENT}"  (or: pip install "lib-clipcap[ray]")'



class RayNotInstalledError(ClipCapError, ImportError):
    """Ray Data is needed (``--engine ray``, :func:`run_tagging_ray`) but not installed; the message says how."""


def require_ray() -> Any:
    """Import and return the ``ray`` module (with ``ray.data``).

    Raises:
        RayNotInstalledError: Ray or Ray Data is missing; the message names the install command.
    """
    try:
        import ray
        import ray.data  # noqa: F401 - the engine needs Ray Data, not only Ray core
    except ImportError as e:
        raise RayNotInstalledError(
            f"the Ray engine needs Ray Data, which is not installed here ({e}); install it with: {INSTALL_HINT}. "
            f"Without it, use the single-machine engine (--engine local, the default)"
        ) from e
    return ray
