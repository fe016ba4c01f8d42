"""Lazy package exports (PEP 562): ``name -> (submodule, attribute)``, imported on first access.

A package lists what it exports and lets this build its module ``__getattr__``, so importing the package stays cheap
(torch and friends load only with the submodule that needs them)::

    _LAZY = {"Captioner": ("captioner", "Captioner")}
    __getattr__ = lazy_getattr(__name__, _LAZY)
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_getattr(package: str, table: Mapping[str, tuple[str, str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that resolves ``table``'s names from their submodules (relative to
    ``package``) on first access and caches them in the package's namespace; other names raise AttributeError."""

    def __getattr__(name: str) -> Any:
        if name in table:
            module, attr = table[name]
            value = getattr(importlib.import_module(f".{module}", package), attr)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
