"""Who may call the HTTP routes: cross-site request, DNS-rebinding and content-type checks, host-free.

A server on ``127.0.0.1`` is reachable from every web page the user opens: a page cannot *read* the answers (no CORS
header allows it), but it can *send* "simple" requests — a POST with ``Content-Type: text/plain``,
``application/x-www-form-urlencoded`` or ``multipart/form-data`` needs no CORS preflight. A route that parsed such a
body as JSON would act on a request forged by any site. And a page on ``http://attacker.example:7860`` whose DNS name
is re-pointed at ``127.0.0.1`` (DNS rebinding) becomes *same-origin* with the local server. So every request is
checked here before a route runs:

1. **Host** (every method, only when the server is bound to a loopback address): the ``Host`` header must be a
   loopback name (``localhost``, ``127.x.y.z``, ``::1``), the bound address, or a name the operator allowed. A
   rebinding page sends its own name and is refused (403).
2. **Origin** (methods that change state: everything but GET, HEAD, OPTIONS; with ``origin_on_reads``, every
   method): a browser sends ``Origin`` with every such request (and ``Referer`` with most); when present it must be
   the server's own origin (the ``Host`` the request came to), an origin the operator allowed, or match the allowed
   pattern. ``Origin: null`` (sandboxed frames, file pages) is refused. A request with neither header comes from a
   program (curl, a script), which is not a cross-site threat: it is let through to authentication and the route's
   own checks. Reads matter too where another CORS layer answers them: gradio's own CORS middleware reflects the
   requesting origin (with credentials) on ``/config`` and its file routes, so a page of any site could *read*
   them. A browser sends ``Origin`` on a GET only for a cross-origin ``fetch``/XHR (CORS mode), an ``EventSource``
   or a module script, never for a navigation or an ``<img>``; so refusing a foreign ``Origin`` on reads blocks
   exactly the cross-site reads (``Referer`` is not used for reads: links from other sites carry one).
3. **Content type** (same methods): a request with a body must say ``application/json`` (or ``application/*+json``);
   anything else is refused with 415 before the body is read (FastAPI applies the same rule to its own JSON bodies,
   as its fix for this CSRF). Forms and text bodies are never parsed as JSON.

:class:`RequestPolicy` holds the configuration and :meth:`RequestPolicy.check` the decision; the FastAPI routes
(:mod:`lib_clipcap.app.api`) use it per route, and :class:`RequestGuard`, a plain ASGI middleware, applies it to a
whole app, websockets included: the standalone server's (:mod:`lib_clipcap.app.server`) and, installed by the WebUI
adapter, the host's own gradio app. Refusals carry a message that names the setting which would allow the request.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "SAFE_METHODS",
    "Refusal",
    "RequestGuard",
    "RequestPolicy",
    "is_json_media_type",
    "is_loopback_host",
    "normalize_origin",
]

#: Methods that never change state here (the routes behind them only read).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: an HTTP ``status``, an error ``type`` and a ``message`` that says what to do."""

    status: int
    type: str
    message: str


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` names and loopback addresses (``127.0.0.0/8``, ``::1``), with or without brackets."""
    h = host.strip().strip("[]").lower().rstrip(".")
    if h in _LOOPBACK_NAMES or h.endswith(".localhost"):  # RFC 6761: browsers resolve *.localhost to loopback
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _split_host_port(value: str) -> tuple[str, int | None]:
    """``("example.com", 8080)`` from ``"Example.com:8080"``; IPv6 ``"[::1]:7860"`` -> ``("::1", 7860)``."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:  # a bare name, or a bare IPv6 address without brackets
        host, port = value, ""
    return host.rstrip("."), (int(port) if port.isdigit() else None)


def normalize_origin(origin: str) -> str | None:
    """``scheme://host:port`` in lower case with the default port made explicit, or ``None`` when malformed.

    ``https://Example.com`` and ``https://example.com:443/`` both give ``https://example.com:443``, so origins given
    with and without their default port compare equal.
    """
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    port = port or _DEFAULT_PORTS[scheme]
    host = parts.hostname.lower().rstrip(".")
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def is_json_media_type(content_type: str | None) -> bool:
    """True for ``application/json`` and ``application/<anything>+json``, parameters (``; charset=...``) ignored."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


@dataclass(frozen=True)
class RequestPolicy:
    """Which requests the HTTP routes accept (see the module docstring for the three checks).

    Args:
        allowed_origins: Origins of other sites whose pages may call state-changing routes
            (``"https://tool.example:8443"``; with or without the default port). The server's own origin is always
            allowed. ``"*"`` allows every origin (the operator's explicit choice; never a default).
        allowed_origin_regex: A regular expression an allowed origin must match in full (as the WebUI's
            ``--cors-allow-origins-regex``), or ``None``.
        allowed_hosts: ``Host`` header names accepted (port ignored); ``None`` accepts any (a server bound to a
            network address is reached under names it cannot know). Build it with :meth:`for_bind`.
        origin_hint: How the operator allows another origin, quoted in the 403 message
            (e.g. ``"--cors-allow-origin ORIGIN"``).
        host_hint: How the operator allows another host name, quoted in the 403 message.
    """

    allowed_origins: tuple[str, ...] = ()
    allowed_origin_regex: str | None = None
    allowed_hosts: frozenset | None = None
    origin_hint: str = "the server's allowed origins"
    host_hint: str = "the server's allowed host names"
    _origins: frozenset = field(default=frozenset(), init=False, repr=False, compare=False)
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        origins = {o.strip() for o in self.allowed_origins if o and o.strip()}
        # an origin that is no http(s) URL (a browser extension's "chrome-extension://ID") is kept as written
        normal = {"*"} if "*" in origins else {normalize_origin(o) or o.lower().rstrip("/") for o in origins}
        object.__setattr__(self, "_origins", frozenset(normal))
        if self.allowed_origin_regex:
            object.__setattr__(self, "_regex", re.compile(self.allowed_origin_regex))
        if self.allowed_hosts is not None:
            object.__setattr__(self, "allowed_hosts", frozenset(_split_host_port(h)[0] for h in self.allowed_hosts))

    @classmethod
    def for_bind(cls, bind_host: str | None, *, allowed_origins: Sequence[str] = (),
                 allowed_origin_regex: str | None = None, extra_hosts: Sequence[str] = (),
                 origin_hint: str = "the server's allowed origins",
                 host_hint: str = "the server's allowed host names") -> RequestPolicy:
        """The policy for a server bound to ``bind_host``.

        Bound to a loopback address, only loopback names, ``bind_host`` itself and ``extra_hosts`` are accepted as
        ``Host`` (the DNS-rebinding defence); bound to anything else (``0.0.0.0``, a LAN address, ``None`` = every
        interface, or behind a tunnel), any ``Host`` is.
        """
        hosts = None
        if bind_host is not None and is_loopback_host(bind_host):
            hosts = frozenset({"localhost", "127.0.0.1", "::1", bind_host.strip("[]").lower(), *extra_hosts})
        return cls(allowed_origins=tuple(allowed_origins), allowed_origin_regex=allowed_origin_regex or None,
                   allowed_hosts=hosts, origin_hint=origin_hint, host_hint=host_hint)

    # ------------------------------------------------------------------------------------------------- decisions
    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a ``Host`` header passes the DNS-rebinding check (an absent header passes: no browser omits it)."""
        if self.allowed_hosts is None or not host_header:
            return True
        host, _ = _split_host_port(host_header)
        return host in self.allowed_hosts or is_loopback_host(host)

    def origin_allowed(self, origin: str, host_header: str | None) -> bool:
        """Whether a state-changing request from a page of ``origin`` may proceed on a server reached as
        ``host_header``."""
        if origin.strip().lower() == "null":
            return False
        if "*" in self._origins:
            return True
        if self._regex is not None and self._regex.fullmatch(origin.strip()):
            return True
        normal = normalize_origin(origin)
        if normal is None:  # not an http(s) origin: only an exact name the operator allowed
            return origin.strip().lower().rstrip("/") in self._origins
        if normal in self._origins:
            return True
        if host_header:  # same origin: the page was served by this server, under the name it used to reach it
            scheme = normal.split("://", 1)[0]
            host, port = _split_host_port(host_header)
            own = normalize_origin(f"{scheme}://{f'[{host}]' if ':' in host else host}"
                                   + (f":{port}" if port else ""))
            if own == normal:
                return True
        return False

    def check(self, method: str, headers: Mapping[str, str], *, require_json: bool = True,
              origin_on_reads: bool = False) -> Refusal | None:
        """The refusal for a request, or ``None`` when it may proceed.

        Args:
            method: The HTTP method (``"POST"``...), or ``"WEBSOCKET"`` for a websocket handshake (checked like a
                state-changing request without a body: browsers do not stop cross-site websockets).
            headers: The request headers with lower-case names (``host``, ``origin``, ``referer``,
                ``content-type``, ``content-length``, ``transfer-encoding``).
            require_json: Apply the content-type rule (the API's routes); ``False`` for routes that take uploads
                (the gradio UI posts files as ``multipart/form-data``), which keep the host and origin rules.
            origin_on_reads: Refuse a foreign ``Origin`` on GET, HEAD and OPTIONS too (``Referer`` is not consulted
                for them). For a whole app behind a CORS layer that reflects origins (gradio's), where a read can
                leak (``/config`` holds folder paths); a preflight from a foreign page is refused as well.
        """
        host_header = headers.get("host")
        if not self.host_allowed(host_header):
            return Refusal(403, "forbidden_host",
                           f"this server is bound to this computer only and does not answer to the host name "
                           f"{_split_host_port(host_header or '')[0]!r} (a page using another name may be a DNS-"
                           f"rebinding attack); use http://127.0.0.1 or http://localhost, or allow the name with "
                           f"{self.host_hint}")
        method = method.upper()
        origin = headers.get("origin")
        source = "Origin"
        if method in SAFE_METHODS:
            if origin_on_reads and origin is not None and not self.origin_allowed(origin, host_header):
                return self._origin_refusal(origin, source)
            return None
        if origin is None and headers.get("referer"):
            ref = urlsplit(headers["referer"])
            origin, source = (f"{ref.scheme}://{ref.netloc}" if ref.scheme and ref.netloc else "null"), "Referer"
        if origin is not None and not self.origin_allowed(origin, host_header):
            return self._origin_refusal(origin, source)
        if method == "WEBSOCKET" or not require_json:
            return None
        content_type = headers.get("content-type")
        has_body = (headers.get("content-length", "0").strip() not in ("", "0")) or "transfer-encoding" in headers
        if (has_body or content_type) and not is_json_media_type(content_type):
            shown = (content_type or "none").split(";", 1)[0].strip()
            return Refusal(415, "unsupported_media_type",
                           f"the request body must be JSON sent with 'Content-Type: application/json' (got "
                           f"{shown!r}); forms and text bodies are refused so that other web sites cannot make "
                           f"this server act")
        return None

    def _origin_refusal(self, origin: str, source: str) -> Refusal:
        return Refusal(403, "forbidden_origin",
                       f"cross-site request refused: the request comes from a page of {origin!r} ({source} "
                       f"header), not from this server; if you trust that site, allow its origin with "
                       f"{self.origin_hint}")


#: ``on_refusal(scope, refusal)``: told of each refused request (to log it); ``scope`` is the ASGI scope.
RefusalHook = Callable[[Mapping[str, Any], Refusal], None]


class RequestGuard:
    """ASGI middleware: :meth:`RequestPolicy.check` in front of every HTTP request and websocket handshake of an app.

    It sits outside the app's own middleware (CORS included), so a refused request gets a plain 403 with no
    ``Access-Control-Allow-*`` header, and a refused websocket is closed before it is accepted (the server answers
    the handshake with 403). The JSON-only rule is not applied here (UI uploads are forms; routes that take JSON apply
    it themselves); the host and origin rules are, reads included unless ``origin_on_reads`` is false.

    Args:
        app: The ASGI app to guard.
        policy: The :class:`RequestPolicy`.
        origin_on_reads: Refuse a foreign ``Origin`` on GET/HEAD/OPTIONS too (see :meth:`RequestPolicy.check`).
        on_refusal: Called with the scope and the :class:`Refusal` of each refused request (e.g. to log it).
    """

    #: Marks the class for installers that must not add it twice to one app (checked by name, not identity: the
    #: module may have been imported twice, e.g. after a host reloads its scripts).
    clipcap_request_guard = True

    def __init__(self, app: Any, policy: RequestPolicy, *, origin_on_reads: bool = True,
                 on_refusal: RefusalHook | None = None) -> None:
        self.app = app
        self.policy = policy
        self.origin_on_reads = origin_on_reads
        self.on_refusal = on_refusal

    def refusal(self, scope: Mapping[str, Any]) -> Refusal | None:
        """The refusal for an ASGI ``http`` or ``websocket`` scope, or ``None`` when it may proceed."""
        kind = scope.get("type")
        if kind not in ("http", "websocket"):  # lifespan and the like
            return None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}
        method = "WEBSOCKET" if kind == "websocket" else str(scope.get("method", "GET"))
        return self.policy.check(method, headers, require_json=False, origin_on_reads=self.origin_on_reads)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        if self.on_refusal is not None:
            try:
                self.on_refusal(scope, refusal)
            except Exception:  # noqa: BLE001 - a logging hook must not turn a refusal into a 500
                log.debug("refusal hook failed", exc_info=True)
        if scope["type"] == "websocket":
            # closing before accepting makes the server answer the handshake with 403: the page never gets a socket
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": {"type": refusal.type, "message": refusal.message}}).encode()
        await send({"type": "http.response.start", "status": refusal.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"vary", b"Origin")]})
        await send({"type": "http.response.body", "body": body})
