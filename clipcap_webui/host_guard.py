"""Guard the host's whole web app, its gradio included, against other sites' pages and DNS rebinding.

Why the extension's own route checks are not enough: the Caption tab's handlers (caption, batch Start, review Scan
and Save...) run on the host's gradio, and gradio checks neither ``Origin`` nor ``Host``:

- gradio 3.41 (A1111 v1.10): the queue is a websocket at ``/queue/join``. Browsers apply no CORS to websockets, so a
  page of any site can open it, send ``{"fn_index": N, ...}`` and the function's inputs (a folder of its choice),
  and read the outputs (every caption of the folder).
- DNS rebinding (a page of ``evil.example:7860`` whose name is re-pointed at 127.0.0.1): the page is same-origin
  with the WebUI, so ``/run/predict`` (gradio 3 and 4), ``POST /queue/join`` + ``GET /queue/data`` (gradio 4, which
  even answers with ``Access-Control-Allow-Origin`` for that name) and gradio 5's ``/gradio_api/...`` all serve it.
- Checking headers inside a handler proves nothing: gradio 3.41's ``/run/predict`` builds the handler's request
  object from a ``"request"`` field the client sends.

So :func:`install` puts :class:`lib_clipcap.app.security.RequestGuard` in front of the host's app, with the policy
of the extension's API (:func:`clipcap_webui.routes.request_policy`): while the WebUI is bound to this computer, only
local host names (and ``--server-name``) are answered; a request whose ``Origin`` is another site's is refused
whatever its method, websocket handshakes included, unless ``--cors-allow-origins`` / ``--cors-allow-origins-regex``
allow that site. Requests without ``Origin`` (API clients, scripts) and the host's own page pass. This guards the
host's own gradio functions and routes as well, not only ClipCap's. ``CLIPCAP_HOST_GUARD=off`` (environment, read
at start-up) turns it off, e.g. behind a reverse proxy that forwards its own host name (docs/security.md).

How it is installed: the host calls ``on_app_started(demo, app)`` after gradio's launch has already served a request
(its ``/startup-events``) and after it rebuilt its own middleware, so Starlette's ``add_middleware`` may refuse
("Cannot add middleware after an application has started"). The guard is therefore put at the front of
``app.user_middleware`` (outermost: before the host's CORS and gzip layers, so a refusal carries no CORS header),
and a middleware stack already built is rebuilt from that list (what the host's own ``setup_middleware`` does).
"Reload UI" makes the host launch a new app and fire ``on_app_started`` again: that app gets its own guard; an app
that already has one is left alone.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from . import LOG_PREFIX

log = logging.getLogger(__name__)

#: The environment variable that turns the guard off (``off``, ``0``, ``false``, ``no``); read at each install.
ENV_SWITCH = "CLIPCAP_HOST_GUARD"
_OFF = frozenset({"off", "0", "false", "no", "disabled"})
_MAX_LOGGED = 64  # distinct refusals printed to the console; a flood from one page prints a handful of lines

__all__ = ["ENV_SWITCH", "enabled", "install", "installed"]


def enabled() -> bool:
    """False when ``$CLIPCAP_HOST_GUARD`` says ``off`` (or ``0``, ``false``, ``no``)."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() not in _OFF


def installed(app: Any) -> bool:
    """Whether ``app``'s middleware list already holds a ClipCap request guard (by marker, not identity: the module
    may have been imported again since)."""
    return any(getattr(getattr(m, "cls", None), "clipcap_request_guard", False)
               for m in getattr(app, "user_middleware", None) or ())


def _policy() -> Any:
    """The API's policy; a malformed ``--cors-allow-origins-regex`` fails closed (no origin allowed by pattern)."""
    from . import routes

    try:
        return routes.request_policy()
    except re.error as e:
        print(f"{LOG_PREFIX} ignoring --cors-allow-origins-regex ({e}): no origin is allowed by pattern")
        return routes.request_policy(origin_regex=False)


class _RefusalLog:
    """Prints one console line per distinct refusal (kind + host name or origin), so the user learns why a page or
    tool was refused and which switch would allow it, without a line per request."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, scope: Mapping[str, Any], refusal: Any) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}
        what = headers.get("host", "") if refusal.type == "forbidden_host" else headers.get("origin", "")
        key = (refusal.type, what)
        if key in self.seen or len(self.seen) >= _MAX_LOGGED:
            return
        self.seen.add(key)
        kind = "websocket" if scope.get("type") == "websocket" else scope.get("method", "")
        print(f"{LOG_PREFIX} refused {kind} {scope.get('path', '')}: {refusal.message} (ClipCap's request guard; "
              f"{ENV_SWITCH}=off turns it off)")


def install(app: Any) -> bool:
    """Put the request guard in front of the host's ``app`` (``on_app_started``). Returns whether it was added.

    Nothing happens when ``app`` is ``None`` or already guarded, or when :func:`enabled` is false. Works on any
    Starlette/FastAPI app, started or not (fastapi 0.94 in A1111 v1.10, 0.104 in Forge, and newer).
    """
    if app is None or not hasattr(app, "user_middleware"):
        return False
    if not enabled():
        print(f"{LOG_PREFIX} request guard off ({ENV_SWITCH}={os.environ.get(ENV_SWITCH)}): other sites' pages and "
              f"rebinding host names can reach the WebUI's gradio functions")
        return False
    if installed(app):
        return False
    from starlette.middleware import Middleware

    from lib_clipcap.app.security import RequestGuard

    app.user_middleware.insert(0, Middleware(RequestGuard, policy=_policy(), origin_on_reads=True,
                                             on_refusal=_RefusalLog()))
    if getattr(app, "middleware_stack", None) is not None:
        # already built (requests were served): rebuild now, so the next request passes the guard; left None, the
        # stack is built lazily on the next request, and other extensions can still add middleware until then
        app.middleware_stack = app.build_middleware_stack()
    return True
