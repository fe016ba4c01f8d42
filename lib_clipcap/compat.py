"""Feature detection for the libraries whose versions differ between hosts, in one place.

A1111 v1.10 runs gradio 3.41.2 with pydantic 1 (fastapi 0.94); Forge runs gradio 4.40 with pydantic 2; the standalone
server runs whatever is current (gradio 6 at the time of writing). Everything else in lib_clipcap calls these helpers
instead of checking versions itself. Features are detected (signatures, attributes), not inferred from version strings.

Nothing here imports gradio or pydantic at module import time: the first helper that needs one imports it.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "component",
    "event_js",
    "gradio_major",
    "has_gradio",
    "model_dump",
    "model_json_schema",
    "model_validate",
    "pydantic_v2",
    "update",
]


# ---------------------------------------------------------------------------------------------------------- pydantic
@functools.lru_cache(maxsize=None)
def pydantic_v2() -> bool:
    """True when pydantic's v2 API (``model_dump``, ``model_validate``) is available."""
    import pydantic

    return hasattr(pydantic.BaseModel, "model_dump")


def model_dump(obj: Any) -> dict[str, Any]:
    """A pydantic model instance as a plain dict (v2 ``model_dump`` / v1 ``dict``)."""
    return obj.model_dump() if pydantic_v2() else obj.dict()


def model_validate(cls: Any, data: Any) -> Any:
    """Build and validate ``cls`` from ``data`` (v2 ``model_validate`` / v1 ``parse_obj``)."""
    return cls.model_validate(data) if pydantic_v2() else cls.parse_obj(data)


def model_json_schema(cls: Any) -> dict[str, Any]:
    """JSON schema of a model class (v2 ``model_json_schema`` / v1 ``schema``)."""
    return cls.model_json_schema() if pydantic_v2() else cls.schema()


# ----------------------------------------------------------------------------------------------------------- gradio
def has_gradio() -> bool:
    """True when gradio can be imported."""
    import importlib.util

    return importlib.util.find_spec("gradio") is not None


@functools.lru_cache(maxsize=None)
def gradio_major() -> int:
    """gradio's major version, for messages and test reports only (behaviour uses the detectors below)."""
    import gradio as gr

    try:
        return int(str(gr.__version__).split(".")[0])
    except ValueError:  # pragma: no cover - a development build
        return 0


@functools.lru_cache(maxsize=None)
def _init_params(cls: type) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):  # pragma: no cover
        return frozenset()


@functools.lru_cache(maxsize=None)
def _event_js_param() -> str:
    """``"js"`` (gradio 4+) or ``"_js"`` (gradio 3): the name of an event listener's client-side function argument."""
    import gradio as gr

    try:
        params = inspect.signature(gr.Button.click).parameters
    except (AttributeError, TypeError, ValueError):  # gradio 3.41 binds listeners per instance
        params = {}
    if "js" in params:
        return "js"
    if "_js" in params:
        return "_js"
    return "js" if gradio_major() >= 4 else "_js"  # pragma: no cover - signature hidden behind **kwargs


def event_js(code: str | None) -> dict[str, Any]:
    """Keyword arguments that attach client-side JavaScript ``code`` to an event listener (``.click(**event_js(..))``)."""
    return {_event_js_param(): code} if code else {}


def component(cls: type, **kwargs: Any) -> Any:
    """Instantiate a gradio component or layout, adapting keyword arguments to the installed gradio.

    - ``copy_button=True``: gradio 3.41-4 ``show_copy_button=True``; gradio 5+ ``buttons=["copy"]`` (where available).
    - Any other argument the class's ``__init__`` does not name is dropped (e.g. ``info=`` where a component lacks
      it), so one call site works everywhere. Only pass optional niceties that way, never arguments whose absence
      changes behaviour in a way that matters.
    """
    params = _init_params(cls)
    copy = kwargs.pop("copy_button", None)
    if copy:
        if "show_copy_button" in params:
            kwargs["show_copy_button"] = True
        elif "buttons" in params:
            kwargs["buttons"] = ["copy"]
    dropped = [k for k in kwargs if k not in params]
    if dropped:
        log.debug("gradio %s does not accept %s; dropped", cls.__name__, dropped)
    return cls(**{k: v for k, v in kwargs.items() if k in params})


def update(**kwargs: Any) -> Any:
    """A component update (``gr.update`` in every gradio version; falls back to a plain dict)."""
    import gradio as gr

    fn: Callable[..., Any] | None = getattr(gr, "update", None)
    if fn is not None:
        return fn(**kwargs)
    return {"__type__": "update", **kwargs}  # pragma: no cover
