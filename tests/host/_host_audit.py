"""Record every host attribute the extension touches, to check it against ``clipcap_webui.host.CAPABILITIES``.

While :func:`audit` is active:

- every host module (``modules``, ``backend``, ``modules_forge``, ``ldm_patched`` and their submodules, as the double
  imports them) gets a ``__getattribute__`` that records ``(module, attribute)`` when the caller is extension code
  (``clipcap_webui/``, ``scripts/``, ``lib_clipcap/``, by this repository's path or the webui's extension link);
- ``import`` statements and ``importlib.import_module`` calls made by extension code record ``(module, "*")`` and
  each ``from ... import name`` as ``(module, name)``;
- ``clipcap_webui.host.cmd_opt`` / ``opt`` record the flags and settings asked for (the extension reads
  ``shared.cmd_opts`` and host settings only through them).

:func:`undeclared` lists what the running host's declaration does not cover.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import re
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST_PACKAGES = ("modules", "backend", "modules_forge", "ldm_patched")
_EXT_PARTS = ("clipcap_webui", "scripts", "lib_clipcap")
_ROOTS = tuple(str(REPO / p) for p in _EXT_PARTS)
_LINKED = tuple(f"/extensions/sd-webui-clipcap/{p}/" for p in _EXT_PARTS)


class Record:
    def __init__(self) -> None:
        self.attrs: set[tuple[str, str]] = set()
        self.flags: set[str] = set()
        self.settings: set[str] = set()


_current: Record | None = None


def _from_extension(depth: int) -> bool:
    try:
        name = sys._getframe(depth + 1).f_code.co_filename
    except ValueError:
        return False
    return name.startswith(_ROOTS) or any(p in name for p in _LINKED)


_HOST_NAME = re.compile(rf"(?:{'|'.join(HOST_PACKAGES)})(?:\.|$)")


def _is_host(name: str) -> bool:
    return _HOST_NAME.match(name) is not None


def _audited_getattribute(self, name):
    rec = _current
    if rec is not None and not name.startswith("__") and _from_extension(1):
        rec.attrs.add((types.ModuleType.__getattribute__(self, "__name__"), name))
    return type(self).__mro__[1].__getattribute__(self, name)


_classes: dict[type, type] = {}


_wrapped_at: list = [None]  # (count, newest name) of sys.modules at the last pass: unchanged means nothing new


def _wrap_loaded() -> None:
    # called after every import statement while auditing (gradio imports inside functions a lot): walking thousands
    # of modules each time made the host suites several times slower, so walk only when a module was added
    state = (len(sys.modules), next(reversed(sys.modules), None))
    if state == _wrapped_at[0]:
        return
    _wrapped_at[0] = state
    # the host's names picked out by the regex in C (filter), not by a Python-level test of each of the thousands of
    # modules: this walk still runs after every import that added a module
    for name in list(filter(_HOST_NAME.match, sys.modules)):
        mod = sys.modules.get(name)
        if not isinstance(mod, types.ModuleType):
            continue
        cls = type(mod)
        if getattr(cls, "_clipcap_audited", False):
            continue
        sub = _classes.get(cls)
        if sub is None:
            sub = _classes[cls] = type(f"Audited{cls.__name__}", (cls,),
                                       {"__getattribute__": _audited_getattribute, "_clipcap_audited": True})
        try:
            mod.__class__ = sub
        except TypeError:  # a module type that refuses it: not audited (none of the double's)
            pass


@contextlib.contextmanager
def audit():
    """Record into a new :class:`Record` (yielded) until the block ends."""
    global _current
    from clipcap_webui import host

    rec, prev = Record(), _current
    orig_import, orig_import_module = builtins.__import__, importlib.import_module
    orig_cmd_opt, orig_opt = host.cmd_opt, host.opt

    def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
        mod = orig_import(name, globals, locals, fromlist, level)
        if level == 0 and _is_host(name) and _from_extension(1):
            rec.attrs.add((name, "*"))
            for item in fromlist or ():
                rec.attrs.add((name, item))
        _wrap_loaded()
        return mod

    def recording_import_module(name, package=None):
        mod = orig_import_module(name, package)
        if _is_host(name) and _from_extension(1):
            rec.attrs.add((name, "*"))
        _wrap_loaded()
        return mod

    def cmd_opt(name, default=None):
        rec.flags.add(name)
        return orig_cmd_opt(name, default)

    def opt(key, default=None):
        rec.settings.add(key)
        return orig_opt(key, default)

    builtins.__import__, importlib.import_module = recording_import, recording_import_module
    host.cmd_opt, host.opt = cmd_opt, opt
    _current = rec
    _wrap_loaded()
    try:
        yield rec
    finally:
        _current = prev
        builtins.__import__, importlib.import_module = orig_import, orig_import_module
        host.cmd_opt, host.opt = orig_cmd_opt, orig_opt


def undeclared(rec: Record, mode: str) -> list[str]:
    """What ``rec`` saw that ``CAPABILITIES`` / ``FLAGS`` / ``SETTINGS`` of ``mode`` do not declare."""
    from clipcap_webui import host

    caps = host.CAPABILITIES[mode]
    out = []
    for mod, attr in sorted(rec.attrs):
        if mod not in caps:
            out.append(f"module {mod} (.{attr})")
        elif attr != "*" and attr not in caps[mod]:
            out.append(f"{mod}.{attr}")
    out += [f"--{f.replace('_', '-')} (cmd_opts.{f})" for f in sorted(rec.flags - host.FLAGS[mode])]
    out += [f"setting {k}" for k in sorted(rec.settings) if not k.startswith("clipcap_") and k not in host.SETTINGS[mode]]
    return out
