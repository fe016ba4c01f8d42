"""Lazy package exports (PEP 562): names imported from their submodule on first access.

A package lists what it exports, by submodule, and lets this build its module ``__getattr__``, so importing the
package stays cheap (torch and friends load only with the submodule that needs them)::

    __getattr__, _LAZY_NAMES = lazy_exports(__name__, {"captioner": ("Captioner", "CaptionResult")})
    __all__ = sorted(_LAZY_NAMES)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]) -> tuple[Callable[[str], Any], tuple[str, ...]]:
    """A module ``__getattr__`` for ``package`` and the names it serves.

    Args:
        package: The package's ``__name__``.
        exports: ``{submodule (relative to package): (attribute names...)}``.

    Returns:
        ``(__getattr__, names)``: the function resolves a name from its submodule on first access and caches it in
        the package's namespace; other names raise ``AttributeError``.
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(f".{where[name]}", package), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, tuple(where)
