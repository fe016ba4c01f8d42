"""A real HTTP server for security tests: uvicorn serving an ASGI app on a free loopback port, in a thread.

Requests go over a real socket with :mod:`http.client`, so the test decides every header byte (``Host``,
``Origin``, ``Content-Type``), as a browser page or an attacker on the network would.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_type(self) -> str | None:
        try:
            return self.json()["error"]["type"]
        except (ValueError, KeyError, TypeError):
            return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app: Any, host: str = "127.0.0.1") -> Iterator[Client]:
    """Serve ``app`` with uvicorn until the block ends; yields a :class:`Client` for it."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield Client(host, port)
    finally:
        server.should_exit = True
        thread.join(10)


class Client:
    """Raw HTTP requests to one server; ``Host`` defaults to the address it was reached at."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.origin = f"http://{host}:{port}"

    def request(self, method: str, path: str, body: Any = None, *, headers: Mapping[str, str] | None = None,
                content_type: str | None = "application/json") -> Reply:
        """Send ``body`` (a dict/list is JSON-encoded, str/bytes sent as they are) with ``content_type``."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        hdrs = {"Host": f"{self.host}:{self.port}"}
        if body is not None and content_type:
            hdrs["Content-Type"] = content_type
        hdrs.update(headers or {})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def head_only(self, method: str, path: str, headers: Mapping[str, str]) -> Reply:
        """Send only the request line and ``headers`` (say, ``Content-Length: 50000000``), never a body, and read
        the answer: what a server decides from the headers alone."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in {"Host": f"{self.host}:{self.port}", **headers}.items():
                conn.putheader(k, v)
            conn.endheaders()
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)
