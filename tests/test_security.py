"""Security of the HTTP surface (docs/security.md): cross-site requests, DNS rebinding, JSON-only bodies, folders and
suffixes a request may write — against the real standalone app served by uvicorn, with raw HTTP requests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi import WebSocket  # noqa: E402  (module level: the route's annotation is resolved from here)
from PIL import Image  # noqa: E402

from _api_helpers import png_b64, wait_for_batch_job  # noqa: E402
from _live_server import serve  # noqa: E402
from lib_clipcap.batch.jobs import DEFAULT_CAPTION_EXTS, JobManager  # noqa: E402
from lib_clipcap.app.security import RequestPolicy, normalize_origin  # noqa: E402
from lib_clipcap.app.server import create_app  # noqa: E402
from lib_clipcap.app.service import ModelManager  # noqa: E402

DEMO = "shapes-demo"
EVIL = "https://evil.example"
TOOL = "https://tool.example"
# The reproduction: a page plants a login launcher through a text/plain "simple request" (no preflight).
DESKTOP_PREFIX = "[Desktop Entry]\nType=Application\nExec=sh -c 'touch /tmp/pwned'\n#"


def every_file(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


class Shared:
    """The session's demo captioner; ``unload`` (an /unload request) leaves it usable for the other tests."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def unload(self) -> None:
        pass

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def world(tmp_path, demo_captioner):
    """A root with a data set, a folder outside it, a symlink escaping it, and the served app."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "ds").mkdir(parents=True)
    outside.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (200, 40 * i, 0)).save(root / "ds" / f"{i:02d}.png")
    os.symlink(outside, root / "escape")
    manager = ModelManager(models_dir=tmp_path / "models", loader=lambda name: Shared(demo_captioner))
    jobs = JobManager(manager, [root], caption_exts_hint="--caption-ext EXT")  # as the standalone server
    policy = RequestPolicy.for_bind("127.0.0.1", allowed_origins=[TOOL], origin_hint="--cors-allow-origin ORIGIN",
                                    host_hint="--allow-host NAME")
    app = create_app(manager, job_manager=jobs, ui=False, default_model=DEMO, request_policy=policy)
    return {"root": root, "outside": outside, "manager": manager, "jobs": jobs, "app": app}


def state_changing_requests(root: Path) -> list[tuple[str, str, dict]]:
    return [
        ("POST", "/clipcap/v1/caption", {"image": png_b64((32, 32), "red"), "model": DEMO, "max_new_tokens": 5}),
        ("POST", "/clipcap/v1/unload", {"model": DEMO}),
        ("POST", "/clipcap/v1/batch", {"inputs": [str(root / "ds")], "model": DEMO, "workers": 0}),
        ("POST", "/clipcap/v1/review", {"folder": str(root / "ds")}),
        ("PUT", "/clipcap/v1/review/caption", {"folder": str(root / "ds"), "image": "00.png", "caption": "planted"}),
        ("POST", "/clipcap/v1/review/undo", {"folder": str(root / "ds")}),
        ("POST", "/clipcap/v1/review/tags", {"folder": str(root / "ds"), "images": ["00.png"], "add": ["planted"]}),
    ]


def test_text_and_form_bodies_are_refused_with_415_and_nothing_happens(world):
    root, manager = world["root"], world["manager"]
    manager.get(DEMO)
    before = every_file(root)
    with serve(world["app"]) as c:
        for method, path, body in state_changing_requests(root):
            import json

            raw = json.dumps(body)
            for ctype, data in (("text/plain", raw), ("text/plain;charset=UTF-8", raw),
                                ("application/x-www-form-urlencoded", "payload=" + raw),
                                ("multipart/form-data; boundary=x", f"--x\r\n\r\n{raw}\r\n--x--"),
                                (None, raw)):
                r = c.request(method, path, data, content_type=ctype)
                assert r.status == 415, (path, ctype, r.status, r.body)
                assert r.error_type == "unsupported_media_type"
                assert "application/json" in r.json()["error"]["message"]
        assert c.post("/clipcap/v1/unload", "", content_type="text/plain").status == 415  # empty, still not JSON
    assert manager.loaded() == [DEMO]  # no unload happened
    assert world["jobs"].jobs() == [] and every_file(root) == before  # no job, no file


def test_foreign_origins_are_refused_and_own_or_allowed_origins_accepted(world):
    root, manager = world["root"], world["manager"]
    with serve(world["app"]) as c:
        for method, path, body in state_changing_requests(root):
            for headers in ({"Origin": EVIL}, {"Origin": "null"}, {"Referer": f"{EVIL}/page.html"},
                            {"Origin": f"http://127.0.0.1:{c.port + 1}"},  # another local server is another site
                            {"Origin": "http://localhost.evil.example"}):
                r = c.request(method, path, body, headers=headers)
                assert r.status == 403 and r.error_type == "forbidden_origin", (path, headers, r.body)
                assert "--cors-allow-origin" in r.json()["error"]["message"]
        assert world["jobs"].jobs() == [] and not list(root.rglob("*.txt"))

        ok = c.post("/clipcap/v1/caption", state_changing_requests(root)[0][2], headers={"Origin": c.origin})
        assert ok.status == 200, ok.body
        r = c.post("/clipcap/v1/caption", state_changing_requests(root)[0][2],
                   headers={"Origin": TOOL, "Referer": f"{TOOL}/app"})
        assert r.status == 200 and r.headers.get("access-control-allow-origin") == TOOL  # the page may read it
        r = c.post("/clipcap/v1/caption", state_changing_requests(root)[0][2],
                   headers={"Referer": f"{c.origin}/"})  # same-origin page without an Origin header
        assert r.status == 200
        r = c.post("/clipcap/v1/batch", {"inputs": ["ds"], "model": DEMO, "workers": 0}, headers={"Origin": c.origin})
        assert r.status == 202, r.body
        assert world["jobs"].wait(r.json()["id"], 60)["written"] == 2
        # a program (no Origin, no Referer) is not a cross-site threat: JSON goes through
        assert c.post("/clipcap/v1/unload", {}).status == 200 and manager.loaded() == []
        assert c.post("/clipcap/v1/unload").status == 200  # no body, no content type: nothing to parse


def test_dns_rebinding_host_names_are_refused_on_a_loopback_bind(world):
    with serve(world["app"]) as c:
        for host in ("evil.example", f"evil.example:{c.port}", "192.168.1.20", "127.0.0.1.nip.io"):
            for method, path in (("GET", "/clipcap/v1/models"), ("GET", "/docs"), ("POST", "/clipcap/v1/unload")):
                r = c.request(method, path, {} if method == "POST" else None, headers={"Host": host})
                assert r.status == 403 and r.error_type == "forbidden_host", (host, path, r.body)
                assert "--allow-host NAME" in r.json()["error"]["message"]
        # same-origin requests of a rebinding page carry its own name as Origin and Host: still refused
        r = c.post("/clipcap/v1/unload", {}, headers={"Host": f"evil.example:{c.port}",
                                                      "Origin": f"http://evil.example:{c.port}"})
        assert r.status == 403
        for host in (f"127.0.0.1:{c.port}", f"localhost:{c.port}", "localhost", f"[::1]:{c.port}"):
            assert c.get("/clipcap/v1/models", headers={"Host": host}).status == 200, host


def test_a_network_bind_answers_any_host_name(world, demo_captioner):
    policy = RequestPolicy.for_bind("0.0.0.0")
    app = create_app(world["manager"], ui=False, default_model=DEMO, request_policy=policy)
    with serve(app) as c:
        assert c.get("/clipcap/v1/models", headers={"Host": "my-pc.lan:7861"}).status == 200
        assert c.post("/clipcap/v1/unload", {}, headers={"Host": "my-pc.lan:7861",
                                                         "Origin": "http://my-pc.lan:7861"}).status == 200
        assert c.post("/clipcap/v1/unload", {}, headers={"Host": "my-pc.lan:7861", "Origin": EVIL}).status == 403


def test_the_desktop_launcher_reproduction_writes_nothing(world, tmp_path):
    """The issue's attack, step by step: every way in is closed, and nothing lands anywhere."""
    root = world["root"]
    autostart = tmp_path / "home" / ".config" / "autostart"
    autostart.mkdir(parents=True)
    attack = {"inputs": [str(root / "ds")], "model": DEMO, "caption_ext": ".desktop", "prefix": DESKTOP_PREFIX,
              "output_dir": str(autostart), "existing": "overwrite", "workers": 0}
    import json

    before = every_file(tmp_path)
    with serve(world["app"]) as c:
        # 1. what a web page can send: text/plain, cross-site
        r = c.post("/clipcap/v1/batch", json.dumps(attack), content_type="text/plain", headers={"Origin": EVIL})
        assert r.status == 403
        r = c.post("/clipcap/v1/batch", json.dumps(attack), content_type="text/plain")
        assert r.status == 415
        # 2. even a trusted client cannot: the output folder is outside the roots...
        r = c.post("/clipcap/v1/batch", attack)
        assert r.status in (403, 422), r.body
        # ...the suffix is not a caption suffix...
        r = c.post("/clipcap/v1/batch", {**attack, "output_dir": None})
        assert r.status == 422 and r.json()["error"]["field"] == "prefix"  # the launcher text is not one line
        r = c.post("/clipcap/v1/batch", {**attack, "output_dir": None, "prefix": "Exec=x"})
        assert r.status == 422 and r.json()["error"]["field"] == "caption_ext"
        assert ".txt" in r.json()["error"]["message"] and "--caption-ext" in r.json()["error"]["message"]
        # ...and captions, prefixes and suffixes are one line of text
        for field in ("prefix", "suffix", "separator"):
            r = c.post("/clipcap/v1/batch", {"inputs": ["ds"], "model": DEMO, field: "a\nb"})
            assert r.status == 422 and r.json()["error"]["field"] == field, r.body
        r = c.post("/clipcap/v1/batch", {"inputs": ["ds"], "model": DEMO, "replace": [["a", "x\r\ny"]]})
        assert r.status == 422
        r = c.post("/clipcap/v1/batch", {"inputs": ["ds"], "model": DEMO, "prefix": "bell\x07"})
        assert r.status == 422 and "U+0007" in r.text
    assert world["jobs"].jobs() == []
    assert every_file(tmp_path) == before


@pytest.mark.parametrize("bad", [
    {"inputs": ["../outside"]},
    {"inputs": ["ds/../../outside"]},
    {"inputs": ["escape"]},  # symlink to a folder outside
    {"inputs": ["ds"], "output_dir": "escape/captions"},
    {"inputs": ["ds"], "output_dir": "../outside"},
    {"inputs": ["ds"], "manifest_jsonl": "escape/m.jsonl"},
    {"inputs": ["ds"], "manifest_csv": "/tmp/../tmp/m.csv"},
    {"inputs": ["/etc"]},
])
def test_paths_outside_the_roots_are_refused(world, tmp_path, bad):
    before = every_file(tmp_path)
    with serve(world["app"]) as c:
        r = c.post("/clipcap/v1/batch", {**bad, "model": DEMO, "workers": 0})
    assert r.status == 403 and r.error_type == "forbidden_path", r.body
    assert "outside the allowed folders" in r.json()["error"]["message"]
    assert every_file(tmp_path) == before and world["jobs"].jobs() == []


@pytest.mark.parametrize("name", [
    "\u2025/outside",  # TWO DOT LEADER: looks like ".." but is a plain name
    "\uff0e\uff0e\uff0foutside",  # fullwidth "../"
    "..\u2215outside",  # DIVISION SLASH
    "%2e%2e/outside",  # URL-encoded: never decoded as a path
    "ds\u202e/../../outside",  # a right-to-left override hiding the real order
])
def test_unicode_look_alikes_stay_plain_names_inside_the_root(world, tmp_path, name):
    """A look-alike of ``..`` or ``/`` is just a (missing) folder name inside the root: 404, nothing written."""
    before = every_file(tmp_path)
    with serve(world["app"]) as c:
        r = c.post("/clipcap/v1/batch", {"inputs": [name], "model": DEMO, "workers": 0})
        assert r.status in (403, 404), r.body
        r = c.post("/clipcap/v1/batch", {"inputs": ["ds"], "output_dir": name, "model": DEMO, "workers": 0,
                                         "dry_run": True})
        assert r.status in (202, 403), r.body
        if r.status == 202:
            world["jobs"].wait(r.json()["id"], 60)
    assert every_file(world["outside"]) == set()
    assert every_file(tmp_path) == before  # a dry run writes nothing, even inside


def test_control_characters_in_paths_are_refused(world):
    with serve(world["app"]) as c:
        for field, value in (("inputs", ["ds\x00/x"]), ("output_dir", "out\nx"), ("manifest_csv", "m\x1b.csv")):
            body = {"inputs": ["ds"], "model": DEMO, field: value}
            r = c.post("/clipcap/v1/batch", body)
            assert r.status == 422 and r.json()["error"]["field"] == field, r.body


def test_caption_suffixes_come_from_the_allow_list(world):
    jobs = world["jobs"]
    assert jobs.caption_exts == DEFAULT_CAPTION_EXTS
    with serve(world["app"]) as c:
        for ext in (".sh", ".desktop", ".bashrc", ".py", ".TXT.desktop"):
            r = c.post("/clipcap/v1/batch", {"inputs": ["ds"], "model": DEMO, "caption_ext": ext})
            assert r.status == 422 and ext in r.text, (ext, r.body)
        for ext in (".png", ".tmp"):  # image and temporary suffixes: refused by the options themselves
            assert c.post("/clipcap/v1/batch", {"inputs": ["ds"], "caption_ext": ext}).status == 422
        r = c.post("/clipcap/v1/batch", {"inputs": ["ds"], "model": DEMO, "caption_ext": ".TAGS", "workers": 0})
        assert r.status == 202, r.body
        assert jobs.wait(r.json()["id"], 60)["written"] == 2
    assert sorted(p.name for p in (world["root"] / "ds").glob("*.TAGS")) == ["00.TAGS", "01.TAGS"]


def test_multiline_captions_only_on_purpose(world):
    with serve(world["app"]) as c:
        r = c.post("/clipcap/v1/batch", {"inputs": ["ds"], "model": DEMO, "prefix": "line one\nline two",
                                         "multiline": True, "workers": 0})
        assert r.status == 202, r.body
        assert world["jobs"].wait(r.json()["id"], 60)["written"] == 2
    assert (world["root"] / "ds" / "00.txt").read_text().startswith("line one\nline two, ")


def test_websocket_from_a_foreign_page_is_closed():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from lib_clipcap.app.server import RequestGuardMiddleware

    app = FastAPI()

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("hello")
        await socket.close()

    app.add_middleware(RequestGuardMiddleware, policy=RequestPolicy.for_bind("127.0.0.1"))
    client = TestClient(app)
    with client.websocket_connect("ws://127.0.0.1:7861/ws", headers={"Origin": "http://127.0.0.1:7861"}) as s:
        assert s.receive_text() == "hello"
    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("ws://127.0.0.1:7861/ws", headers={"Origin": EVIL}) as s:
            s.receive_text()


@pytest.mark.parametrize("origin, normal", [
    ("https://Example.com", "https://example.com:443"),
    ("https://example.com:443/", "https://example.com:443"),
    ("http://[::1]:7860", "http://[::1]:7860"),
    ("null", None),
    ("file://", None),
    ("javascript:alert(1)", None),
    ("http://host:notaport", None),
])
def test_origins_are_normalised(origin, normal):
    assert normalize_origin(origin) == normal


def test_policy_rules():
    local = RequestPolicy.for_bind("127.0.0.1", allowed_origins=["https://a.example:443"],
                                   allowed_origin_regex=r"https://.*\.trusted\.example")
    post = {"host": "127.0.0.1:7860", "content-type": "application/json", "content-length": "2"}
    assert local.check("POST", post) is None
    assert local.check("POST", {**post, "origin": "https://a.example"}) is None  # default port given or not
    assert local.check("POST", {**post, "origin": "https://x.trusted.example"}) is None
    assert local.check("POST", {**post, "origin": "https://x.trusted.example.evil.example"}).status == 403
    assert local.check("POST", {**post, "content-type": "application/vnd.api+json"}) is None
    assert local.check("POST", {**post, "content-type": "application/jsonp"}).status == 415
    assert local.check("GET", {"host": "evil.example", "origin": "https://evil.example"}).type == "forbidden_host"
    assert local.check("GET", {"host": "127.0.0.1", "origin": "https://evil.example"}) is None  # reads are fine
    read = {"host": "127.0.0.1:7860", "origin": "https://evil.example"}
    for method in ("GET", "HEAD", "OPTIONS"):  # ...unless the app behind answers reads with CORS (gradio)
        assert local.check(method, read, origin_on_reads=True).type == "forbidden_origin"
    assert local.check("GET", {**read, "origin": "http://127.0.0.1:7860"}, origin_on_reads=True) is None
    assert local.check("GET", {"host": "127.0.0.1", "referer": "https://evil.example/"},
                       origin_on_reads=True) is None  # a link from another site is a navigation, not a read
    assert local.check("POST", {**post, "content-type": "text/plain"}, require_json=False) is None  # UI uploads
    assert RequestPolicy.for_bind(None).allowed_hosts is None  # every interface: any name
    anything = RequestPolicy(allowed_origins=["*"])
    assert anything.check("POST", {**post, "origin": "https://evil.example"}) is None  # the operator's choice
    assert anything.check("POST", {**post, "origin": "null"}).status == 403


def test_browser_extension_origins_are_allowed_by_exact_name_only():
    ext = "chrome-extension://abcdefghijklmnop"
    post = {"host": "127.0.0.1:7860", "content-type": "application/json", "content-length": "2"}
    policy = RequestPolicy.for_bind("127.0.0.1", allowed_origins=[ext])
    assert policy.check("POST", {**post, "origin": ext}) is None
    assert policy.check("GET", {**post, "origin": ext.upper()}, origin_on_reads=True) is None
    assert policy.check("POST", {**post, "origin": "chrome-extension://other"}).status == 403
    assert RequestPolicy.for_bind("127.0.0.1").check("POST", {**post, "origin": ext}).status == 403
    by_pattern = RequestPolicy.for_bind("127.0.0.1", allowed_origin_regex=r"moz-extension://[0-9a-f-]+")
    assert by_pattern.check("POST", {**post, "origin": "moz-extension://1234-abcd"}) is None


@pytest.mark.slow
def test_the_serve_command_applies_the_rules(tmp_path):
    """`python -m lib_clipcap serve --batch-root DIR` as a user starts it: the issue's reproduction end to end."""
    import json
    import subprocess
    import sys
    import time

    from _live_server import Client, free_port

    root = tmp_path / "root"
    (root / "ds").mkdir(parents=True)
    Image.new("RGB", (32, 32), "red").save(root / "ds" / "a.png")
    port = free_port()
    cmd = [sys.executable, "-m", "lib_clipcap", "serve", "--no-ui", "--no-preload", "--demo", "--offline",
           "--port", str(port), "--batch-root", str(root), "--cors-allow-origin", TOOL, "--allow-host", "my.box"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, env={**os.environ, "CLIPCAP_MODELS_DIR": str(tmp_path / "models")})
    try:
        c = Client("127.0.0.1", port)
        deadline = time.monotonic() + 120
        while True:
            try:
                if c.get("/clipcap/v1/models").status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
            time.sleep(0.3)
        attack = {"inputs": ["ds"], "caption_ext": ".desktop", "prefix": DESKTOP_PREFIX, "existing": "overwrite"}
        r = c.post("/clipcap/v1/batch", json.dumps(attack), content_type="text/plain", headers={"Origin": EVIL})
        assert r.status == 403 and r.error_type == "forbidden_origin"
        assert c.post("/clipcap/v1/batch", json.dumps(attack), content_type="text/plain").status == 415
        assert c.get("/clipcap/v1/models", headers={"Host": "evil.example"}).status == 403
        assert c.get("/clipcap/v1/models", headers={"Host": "my.box:80"}).status == 200  # --allow-host
        assert c.get("/docs").status == 404 and c.get("/openapi.json").status == 404  # no --api-docs
        r = c.post("/clipcap/v1/batch", {"inputs": ["ds"], "caption_ext": ".desktop"})
        assert r.status == 422 and "--caption-ext" in r.text
        r = c.post("/clipcap/v1/batch", {"inputs": ["ds"], "model": DEMO, "workers": 0}, headers={"Origin": TOOL})
        assert r.status == 202 and r.headers.get("access-control-allow-origin") == TOOL, r.body
        wait_for_batch_job(c, r.json()["id"], timeout=120, poll=0.3)
        assert (root / "ds" / "a.txt").read_text().strip()
        assert not list(tmp_path.rglob("*.desktop"))
    finally:
        proc.terminate()
        proc.wait(30)


# ------------------------------------------------------------------------------ the whole app: gradio routes too
@pytest.fixture
def ui_app(tmp_path, demo_captioner):
    """The standalone app with its gradio UI, one allowed origin, and a small image limit (64 KiB)."""
    pytest.importorskip("gradio")
    manager = ModelManager(models_dir=tmp_path / "models", loader=lambda name: Shared(demo_captioner))
    policy = RequestPolicy.for_bind("127.0.0.1", allowed_origins=[TOOL], origin_hint="--cors-allow-origin ORIGIN",
                                    host_hint="--allow-host NAME")
    return create_app(manager, ui=True, default_model=DEMO, request_policy=policy, max_image_bytes=64 * 1024)


def no_cors_grant(reply) -> bool:
    return not any(k.startswith("access-control-allow") for k in reply.headers)


def test_other_sites_cannot_read_the_ui_or_the_api(ui_app, tmp_path):
    """gradio's own CORS layer reflects any origin, with credentials, on reads: /config holds the models folder. The
    guard refuses a foreign Origin on every method before gradio sees it."""
    with serve(ui_app) as c:
        config = c.get("/config")
        assert config.status == 200 and str(tmp_path / "models") in config.text  # what a foreign page must not read
        prefix = config.json().get("api_prefix", "") or ""
        for headers in ({"Origin": EVIL}, {"Origin": EVIL, "Host": f"x.localhost:{c.port}"},
                        {"Origin": f"http://localhost:{c.port + 1}"}, {"Origin": f"http://127.0.0.1:{c.port + 1}"},
                        {"Origin": "null"}):
            for path in ("/config", f"{prefix}/info", "/", "/clipcap/v1/models"):
                r = c.get(path, headers=headers)
                assert r.status == 403 and r.error_type == "forbidden_origin", (path, headers, r.status)
                assert no_cors_grant(r) and str(tmp_path) not in r.text, (path, headers, r.headers)
            r = c.request("OPTIONS", "/config", headers={**headers, "Access-Control-Request-Method": "GET"})
            assert r.status == 403 and no_cors_grant(r)
        for headers in ({}, {"Origin": c.origin}, {"Referer": f"{EVIL}/a-link-to-this-server"}):
            assert c.get("/config", headers=headers).status == 200, headers
        r = c.get("/config", headers={"Origin": TOOL})  # --cors-allow-origin: that site's pages may read
        assert r.status == 200 and r.headers.get("access-control-allow-origin") == TOOL


def test_job_status_is_not_readable_by_other_sites(world):
    with serve(world["app"]) as c:
        r = c.post("/clipcap/v1/batch", {"inputs": ["ds"], "model": DEMO, "workers": 0, "dry_run": True})
        assert r.status == 202, r.body
        job = r.json()["id"]
        world["jobs"].wait(job, 60)
        r = c.get(f"/clipcap/v1/batch/{job}", headers={"Origin": EVIL})
        assert r.status == 403 and no_cors_grant(r) and str(world["root"]) not in r.text
        assert c.get(f"/clipcap/v1/batch/{job}").status == 200  # a program, or the server's own page, may


def test_api_docs_are_off_unless_asked_for(world, ui_app):
    for app in (world["app"], ui_app):
        with serve(app) as c:
            for path in ("/docs", "/redoc", "/openapi.json"):
                assert c.get(path).status == 404, path
    app = create_app(world["manager"], ui=False, default_model=DEMO, api_docs=True)
    with serve(app) as c:
        assert c.get("/docs").status == 200
        assert "/clipcap/v1/caption" in c.get("/openapi.json").json()["paths"]


def test_ui_request_bodies_are_capped_by_the_image_limit(ui_app):
    with serve(ui_app) as c:
        prefix = c.get("/config").json().get("api_prefix", "") or ""
        for path in (f"{prefix}/upload", f"{prefix}/run/predict", f"{prefix}/queue/join"):
            r = c.head_only("POST", path, {"Content-Type": "multipart/form-data; boundary=x",
                                           "Content-Length": str(64 * 1024 * 4 // 3 + (1 << 20) + 1)})
            assert r.status == 413 and r.error_type == "payload_too_large", (path, r.status, r.body)
            r = c.head_only("POST", path, {"Content-Type": "multipart/form-data; boundary=x",
                                           "Transfer-Encoding": "chunked"})
            assert r.status == 411, (path, r.status, r.body)
        body = (b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n"
                b"Content-Type: image/png\r\n\r\n" + b"\x89PNG" + b"0" * 1000 + b"\r\n--x--\r\n")
        r = c.post(f"{prefix}/upload", body, content_type="multipart/form-data; boundary=x")
        assert r.status == 200, r.body  # an upload within the limit goes through
