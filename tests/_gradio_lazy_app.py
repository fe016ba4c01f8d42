"""Test harness only: gradio's per-Blocks FastAPI app, built when something first uses it instead of at once.

Since gradio 5, ``gr.Blocks.__init__`` (through ``queue()``) and ``Blocks.__exit__`` each build a whole FastAPI app
(``App.create_app``: some 950 routes analysed), so a WebUI double's ``create_ui`` -- six Blocks, as the host builds
them -- builds twelve apps that nothing serves: about 0.6 s of every host test that builds the page, a sixth of the
fast tier. Both calls only store the app on the Blocks (``self.app = ...``), and ``launch()`` builds its own.

:func:`install` makes those two calls record what they would build, and ``Blocks.app`` build it on first read (the
same ``App.create_app(blocks, ...)`` call, then kept). What a test can observe is unchanged: reading ``demo.app``,
launching, closing or serving ``/config`` all see a real app built from the same Blocks. Where ``queue()`` and
``__exit__`` build no app (gradio 3.41, 4.x) nothing is deferred. ``CLIPCAP_TEST_EAGER_GRADIO_APP=1`` turns it off.

:func:`install_on_import` patches when a test first imports gradio, so a run that never uses gradio never imports it
(``import gradio`` costs seconds).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import os
import sys
import threading
from typing import Any

_state = threading.local()


class _PendingApp:
    """The arguments of an ``App.create_app`` call not made yet."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args, self.kwargs = args, kwargs


def install_on_import() -> None:
    """Patch gradio as soon as ``gradio.blocks`` is imported (now, if it already is)."""
    if "gradio.blocks" in sys.modules:
        install(sys.modules["gradio.blocks"])
    elif not any(isinstance(f, _PatchAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterImport())


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Finds ``gradio.blocks`` through the other finders and runs :func:`install` once it has executed."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "gradio.blocks":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_install(module: Any) -> None:
            exec_module(module)
            install(module)

        spec.loader.exec_module = exec_then_install  # this spec's loader object only
        return spec


def install(blocks: Any) -> bool:
    """Patch the ``gradio.blocks`` module (once per process); returns whether anything was patched."""
    if os.environ.get("CLIPCAP_TEST_EAGER_GRADIO_APP") == "1":
        return False
    Blocks, App = blocks.Blocks, getattr(blocks, "App", None)
    if App is None or getattr(Blocks, "_clipcap_lazy_app", False):
        return False
    create_app = App.create_app

    def deferring(*args: Any, **kwargs: Any) -> Any:
        if getattr(_state, "defer", 0):
            return _PendingApp(args, kwargs)
        return create_app(*args, **kwargs)

    def within_defer(method):
        @functools.wraps(method)
        def wrapper(self, *args: Any, **kwargs: Any) -> Any:
            _state.defer = getattr(_state, "defer", 0) + 1
            try:
                return method(self, *args, **kwargs)
            finally:
                _state.defer -= 1

        return wrapper

    def get_app(self) -> Any:
        try:
            app = self.__dict__["app"]
        except KeyError:
            raise AttributeError("app") from None
        if isinstance(app, _PendingApp):
            app = self.__dict__["app"] = create_app(*app.args, **app.kwargs)
        return app

    def set_app(self, value: Any) -> None:
        self.__dict__["app"] = value

    App.create_app = staticmethod(deferring)
    Blocks.queue = within_defer(Blocks.queue)
    Blocks.__exit__ = within_defer(Blocks.__exit__)
    Blocks.app = property(get_app, set_app)
    Blocks._clipcap_lazy_app = True
    return True
