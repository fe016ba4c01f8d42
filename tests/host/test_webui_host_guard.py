"""The request guard on the host's own app (clipcap_webui/host_guard.py, docs/security.md): no page of another site and
no DNS-rebinding host name can run, or read the results of, the Caption tab's functions through the host's gradio.

The host double is launched as webui.py launches the real one (gradio's launch on a real uvicorn server, the host's
middleware swap, then ``on_app_started`` on gradio's app), and the tab's review "Scan" and "Save" functions are
driven by raw requests, the ways the issue's reproductions did:

- gradio 3.41 (A1111): the websocket queue ``/queue/join`` and ``/run/predict``;
- gradio 4.x (Forge) and later: ``/run/predict`` and ``POST /queue/join`` + ``GET /queue/data`` (under
  ``/gradio_api`` from gradio 5).

A refused attack must leave the caption file as it was and get no caption text back; the same requests from the
page's own origin, or from a program that sends no ``Origin``, must still work.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from _live_server import Client

gr = pytest.importorskip("gradio")
GRADIO = int(gr.__version__.split(".")[0])
TRANSPORTS = ("ws", "run") if GRADIO < 4 else ("run", "queue")
EVIL = "http://evil.example"
HAND = "a hand-written caption"
ATTACK = "ATTACKER caption via review save"


# ------------------------------------------------------------------------------------------------- gradio driver
class Gradio:
    """Drives one launched gradio app with raw requests: its ``/config``, a function by its button's elem_id, and the
    transports of this gradio version."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.client = Client(self.host, self.port)
        self.origin = self.client.origin
        r = self.client.get("/config")
        assert r.status == 200, r.body
        self.config = r.json()
        self.prefix = self.config.get("api_prefix", "") or ""  # "/gradio_api" from gradio 5

    def component(self, elem_id: str) -> dict:
        for c in self.config["components"]:
            if (c.get("props") or {}).get("elem_id") == elem_id:
                return c
        raise LookupError(elem_id)

    def fn(self, button: str) -> tuple[int, list[int]]:
        """``(fn_index, input component ids)`` of the Python click handler of the button ``button``."""
        target = self.component(button)["id"]
        for i, dep in enumerate(self.config["dependencies"]):
            targets = dep.get("targets") or []
            ids = [t[0] if isinstance(t, (list, tuple)) else t for t in targets]
            trigger = dep.get("trigger") or next((t[1] for t in targets if isinstance(t, (list, tuple))), None)
            if target in ids and trigger == "click" and dep.get("backend_fn", True):
                return dep.get("id", i), list(dep["inputs"])
        raise LookupError(button)

    def inputs(self, ids: list[int], overrides: Mapping[str, Any]) -> list[Any]:
        """The page's current value of each input (the config's), ``overrides`` by elem_id; State inputs are sent as
        ``None`` (the server keeps them per session)."""
        by_id = {c["id"]: c for c in self.config["components"]}
        out = []
        for i in ids:
            c = by_id[i]
            props = c.get("props") or {}
            if props.get("elem_id") in overrides:
                out.append(overrides[props["elem_id"]])
            else:
                out.append(None if c.get("type") == "state" else props.get("value"))
        return out

    # ------------------------------------------------------------------------------------------------ transports
    def call(self, transport: str, fn_index: int, data: list[Any], session: str,
             headers: Mapping[str, str]) -> tuple[int, Any]:
        """Run ``fn_index`` with ``data`` in ``session``; ``(status, outputs or the refusal body)``; status 200 with
        the outputs when it ran, the HTTP status of the refusal (or of the websocket handshake) when not."""
        return getattr(self, f"_call_{transport}")(fn_index, data, session, dict(headers))

    def _call_run(self, fn_index: int, data: list[Any], session: str, headers: dict) -> tuple[int, Any]:
        r = self.client.post(f"{self.prefix}/run/predict",
                             {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None},
                             headers=headers)
        return r.status, (r.json().get("data") if r.status == 200 else r.text)

    def _call_queue(self, fn_index: int, data: list[Any], session: str, headers: dict) -> tuple[int, Any]:
        r = self.client.post(f"{self.prefix}/queue/join",
                             {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None,
                              "trigger_id": None}, headers=headers)
        if r.status != 200:
            return r.status, r.text
        event_id = r.json().get("event_id")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            conn.putrequest("GET", f"{self.prefix}/queue/data?session_hash={session}", skip_host=True)
            for k, v in {"Host": f"{self.host}:{self.port}", "Accept": "text/event-stream", **headers}.items():
                conn.putheader(k, v)
            conn.endheaders()
            resp = conn.getresponse()
            if resp.status != 200:
                return resp.status, resp.read().decode("utf-8", "replace")
            while line := resp.readline():
                if not line.startswith(b"data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed" and msg.get("event_id") in (None, event_id):
                    assert msg.get("success", True), msg
                    return 200, msg["output"]["data"]
            raise AssertionError("the event stream ended before the function completed")
        finally:
            conn.close()

    def _call_ws(self, fn_index: int, data: list[Any], session: str, headers: dict) -> tuple[int, Any]:
        status = self.ws_handshake(headers)
        if status != 101:
            return status, None
        from websockets.sync.client import connect  # gradio 3.41 needs websockets 10/11: the sync client is 11+

        extra = {k: v for k, v in headers.items() if k.lower() not in ("origin", "host")}
        with connect(f"ws://{self.host}:{self.port}/queue/join", origin=headers.get("Origin"),
                     additional_headers=extra or None, max_size=None, open_timeout=30) as ws:
            while True:
                msg = json.loads(ws.recv(timeout=120))
                if msg["msg"] == "send_hash":
                    ws.send(json.dumps({"fn_index": fn_index, "session_hash": session}))
                elif msg["msg"] == "send_data":
                    ws.send(json.dumps({"data": data, "event_data": None, "fn_index": fn_index,
                                        "session_hash": session}))
                elif msg["msg"] == "process_completed":
                    assert msg.get("success", True), msg
                    return 200, msg["output"]["data"]

    def ws_handshake(self, headers: Mapping[str, str]) -> int:
        """The HTTP status a websocket handshake to ``/queue/join`` gets (101: the socket is open) — raw bytes, so
        that ``Host`` and ``Origin`` are exactly what the test says."""
        hdrs = {"Host": f"{self.host}:{self.port}", "Upgrade": "websocket", "Connection": "Upgrade",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), "Sec-WebSocket-Version": "13",
                **headers}
        path = f"{self.prefix}/queue/join"
        raw = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        with socket.create_connection((self.host, self.port), timeout=30) as s:
            s.sendall(raw.encode("latin-1"))
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
        return int(head.split(b" ", 2)[1])


# ------------------------------------------------------------------------------------------------------ fixtures
def dataset(folder: Path) -> Path:
    from lib_clipcap.registry import package_path

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(package_path("bundled:assets/samples/shapes_00.png"), folder / "shapes_00.png")
    (folder / "shapes_00.txt").write_text(HAND + "\n", encoding="utf-8")
    return folder


@contextlib.contextmanager
def launched(make_webui, mode: str, argv=(), config=None) -> Iterator[tuple[Any, Gradio]]:
    webui = make_webui(mode, argv=list(argv), config=config)
    webui.create_ui()
    webui.launch()
    yield webui, Gradio(webui.url)


def scan_and_save(g: Gradio, transport: str, folder: Path, text: str, session: str,
                  headers: Mapping[str, str]) -> tuple[tuple[int, Any], tuple[int, Any]]:
    """The issue's reproduction: the review "Scan" of ``folder`` (its outputs hold the captions), then "Save" of
    ``text`` as the selected image's caption, in one session."""
    scan, scan_inputs = g.fn("clipcap_review_scan")
    save, save_inputs = g.fn("clipcap_review_save")
    scanned = g.call(transport, scan, g.inputs(scan_inputs, {"clipcap_review_folder": str(folder)}), session, headers)
    saved = g.call(transport, save, g.inputs(save_inputs, {"clipcap_review_caption": text}), session, headers)
    return scanned, saved


def has_no_cors_grant(reply: Any) -> bool:
    return not any(k.startswith("access-control-allow") for k in reply.headers)


# --------------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_foreign_pages_and_rebinding_hosts_cannot_run_the_tab(mode, make_webui, tmp_path, transport):
    folder = dataset(tmp_path / "ds")
    # the user named the folder (without the setting the tab may use only the WebUI's own folders)
    config = {"clipcap_batch_roots": str(tmp_path)}
    caption = folder / "shapes_00.txt"
    with launched(make_webui, mode, config=config) as (webui, g):
        attacks = {
            "foreign origin": {"Origin": EVIL},
            "foreign origin, *.localhost host": {"Origin": EVIL, "Host": f"x.localhost:{g.port}"},
            "another local server's page": {"Origin": f"http://127.0.0.1:{g.port + 1}"},
            "rebinding host": {"Host": f"evil.example:{g.port}", "Origin": f"http://evil.example:{g.port}"},
            "rebinding host, no origin": {"Host": f"evil.example:{g.port}"},
        }
        for name, headers in attacks.items():
            scanned, saved = scan_and_save(g, transport, folder, ATTACK, f"attacker-{len(name)}", headers)
            for status, body in (scanned, saved):
                assert status == 403, (name, status, body)
                assert HAND not in json.dumps(body), name  # nothing of the folder came back
            assert caption.read_text(encoding="utf-8") == HAND + "\n", name
            if transport == "ws":  # nor does a page get a socket to try
                assert g.ws_handshake(headers) == 403, name

        # the WebUI's own page and a program without Origin still run the same functions
        for i, headers in enumerate(({"Origin": g.origin}, {})):
            text = f"edited by the page itself {i}"
            (status, scanned), (saved_status, _) = scan_and_save(g, transport, folder, text, f"own-{i}", headers)
            assert status == 200 and saved_status == 200, (headers, scanned)
            assert caption.read_text(encoding="utf-8").strip() == text, headers
            if i == 0:
                assert HAND in json.dumps(scanned)  # the page read the caption it scanned
    assert webui.errors() == []


def test_cross_origin_reads_are_refused_without_cors_headers(mode, make_webui):
    allowed = "https://tool.example"
    with launched(make_webui, mode, ["--api", "--cors-allow-origins", allowed]) as (webui, g):
        c = g.client
        for headers in ({"Origin": EVIL}, {"Origin": EVIL, "Host": f"x.localhost:{g.port}"},
                        {"Origin": f"http://localhost:{g.port + 1}"}, {"Origin": "null"},
                        {"Host": f"evil.example:{g.port}", "Origin": f"http://evil.example:{g.port}"}):
            for path in ("/config", f"{g.prefix}/info", "/sdapi/v1/interrogate", "/clipcap/v1/models"):
                r = c.get(path, headers=headers)
                assert r.status == 403 and has_no_cors_grant(r), (path, headers, r.status, r.headers)
                assert r.error_type in ("forbidden_origin", "forbidden_host")
            r = c.request("OPTIONS", "/config", headers={**headers, "Access-Control-Request-Method": "GET"})
            assert r.status == 403 and has_no_cors_grant(r), headers  # no preflight granted either
        assert "evil.example" not in c.get("/config").text  # and nothing of it leaks into what others get
        own_by_name = {"Host": f"localhost:{g.port}", "Origin": f"http://localhost:{g.port}"}
        for headers in ({}, {"Origin": g.origin}, own_by_name):
            assert c.get("/config", headers=headers).status == 200, headers
        r = c.get("/config", headers={"Origin": allowed})  # the user's --cors-allow-origins site may read it
        assert r.status == 200 and r.headers.get("access-control-allow-origin") == allowed
        r = c.request("OPTIONS", "/clipcap/v1/caption",
                      headers={"Origin": allowed, "Access-Control-Request-Method": "POST",
                               "Access-Control-Request-Headers": "content-type"})
        assert r.status == 200 and r.headers.get("access-control-allow-origin") == allowed
        assert c.get("/clipcap/v1/models", headers={"Origin": allowed}).status == 200


def test_the_guard_is_installed_once_per_app_and_again_after_reload_ui(mode, make_webui):
    from clipcap_webui import host_guard

    def guards(app: Any) -> int:
        return sum(bool(getattr(m.cls, "clipcap_request_guard", False)) for m in app.user_middleware)

    with launched(make_webui, mode) as (webui, g):
        from modules import script_callbacks

        first = webui.app
        assert guards(first) == 1
        script_callbacks.app_started_callback(webui.demo, first)  # a second call on the same app adds nothing
        assert guards(first) == 1 and host_guard.install(first) is False
        assert g.client.get("/config", headers={"Origin": EVIL}).status == 403

        webui.reload_ui()  # "Reload UI": the host launches the new UI on a new app
        webui.launch()
        assert webui.app is not first and guards(webui.app) == 1
        g = Gradio(webui.url)
        assert g.client.get("/config", headers={"Origin": EVIL}).status == 403
        assert g.client.get("/config", headers={"Host": f"evil.example:{g.port}"}).status == 403
        assert g.client.get("/config", headers={"Origin": g.origin}).status == 200
        assert g.ws_handshake({"Origin": EVIL}) == 403 or GRADIO >= 4  # gradio 4+ has no websocket queue
    assert webui.errors() == []


def test_listen_answers_network_names_but_not_foreign_origins(mode, make_webui):
    with launched(make_webui, mode, ["--listen"]) as (webui, g):
        lan = f"192.168.1.5:{g.port}"
        assert g.client.get("/config", headers={"Host": lan, "Origin": f"http://{lan}"}).status == 200
        assert g.client.get("/config", headers={"Host": "my-pc.lan"}).status == 200
        r = g.client.get("/config", headers={"Host": lan, "Origin": EVIL})
        assert r.status == 403 and has_no_cors_grant(r)


def test_the_environment_switch_turns_the_guard_off(mode, make_webui, monkeypatch, capsys):
    from clipcap_webui import host_guard

    monkeypatch.setenv(host_guard.ENV_SWITCH, "off")
    with launched(make_webui, mode) as (webui, g):
        assert not host_guard.installed(webui.app)
        assert g.client.get("/config", headers={"Origin": EVIL}).status == 200  # the user's choice, documented
    assert "request guard off" in capsys.readouterr().out


def test_nowebui_api_app_is_guarded_too(mode, make_webui, fake_models):
    webui = make_webui(mode, argv=["--nowebui"])
    webui.create_ui()
    fake_models()
    from _live_server import serve

    with serve(webui.start(demo=None)) as c:
        # every interface is bound: any host name is answered, but no other site's page
        assert c.get("/clipcap/v1/models", headers={"Host": "my-pc.lan:7861"}).status == 200
        r = c.get("/clipcap/v1/models", headers={"Origin": EVIL})
        assert r.status == 403 and r.error_type == "forbidden_origin" and has_no_cors_grant(r)
