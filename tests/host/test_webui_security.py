"""The extension's routes on the WebUI's server (the host double, served by uvicorn, raw HTTP requests): no
cross-site request, no rebinding host name, JSON bodies only, batch folders only where the user allowed them, and
refusals that name the WebUI setting or flag that would allow the request (docs/security.md)."""

from __future__ import annotations

import json
import shutil

import pytest

from _api_helpers import png_b64, wait_for_batch_job
from _live_server import serve

EVIL = "https://evil.example"
SETTING = "clipcap_batch_roots"


def dataset(folder):
    from lib_clipcap.registry import package_path

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("shapes_00.png", "shapes_01.jpg"):
        shutil.copy(package_path(f"bundled:assets/samples/{name}"), folder / name)
    return folder


def test_every_state_changing_route_refuses_forms_text_and_foreign_pages(mode, make_webui, tmp_path):
    folder = dataset(tmp_path / "ds")
    webui = make_webui(mode, argv=["--api"], config={SETTING: str(tmp_path)})
    webui.create_ui()
    with serve(webui.start()) as c:
        requests = [("/clipcap/v1/caption", {"image": png_b64(), "model": "shapes-demo"}),
                    ("/clipcap/v1/unload", {}),
                    ("/clipcap/v1/batch", {"inputs": [str(folder)], "model": "shapes-demo"}),
                    ("/clipcap/v1/generated-caption", {"image": png_b64()})]
        for path, body in requests:
            for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
                r = c.post(path, json.dumps(body), content_type=ctype)
                assert r.status == 415 and r.error_type == "unsupported_media_type", (path, ctype, r.body)
            r = c.post(path, body, headers={"Origin": EVIL})
            assert r.status == 403 and r.error_type == "forbidden_origin", (path, r.body)
            assert "--cors-allow-origins" in r.json()["error"]["message"]
            r = c.post(path, body, headers={"Host": "rebind.example", "Origin": "http://rebind.example"})
            assert r.status == 403 and r.error_type == "forbidden_host", (path, r.body)
        assert not list(folder.glob("*.txt"))  # nothing was written
        # the same requests from the WebUI's own page (its origin) or from a program go through
        r = c.post("/clipcap/v1/caption", requests[0][1], headers={"Origin": c.origin})
        assert r.status == 200, r.body
        assert c.post("/clipcap/v1/generated-caption", requests[3][1]).status == 200
        r = c.post("/clipcap/v1/batch", requests[2][1], headers={"Origin": c.origin})
        assert r.status == 202, r.body
        assert wait_for_batch_job(c, r.json()["id"])["written"] == 2
        for host in ("localhost", f"127.0.0.1:{c.port}"):
            assert c.get("/clipcap/v1/models", headers={"Host": host}).status == 200
    assert webui.errors() == []


def test_the_hosts_cors_flags_allow_other_origins(mode, make_webui, fake_models):
    webui = make_webui(mode, argv=["--api", "--cors-allow-origins", "https://a.example,http://localhost:3000",
                                   "--cors-allow-origins-regex", r"https://.*\.b\.example"])
    webui.create_ui()
    fake_models()
    body = {"image": png_b64(), "model": "shapes-demo"}
    with serve(webui.start()) as c:
        for origin in ("https://a.example", "http://localhost:3000", "https://x.b.example"):
            assert c.post("/clipcap/v1/caption", body, headers={"Origin": origin}).status == 200, origin
        for origin in (EVIL, "https://b.example.evil.example", "http://localhost:3001"):
            assert c.post("/clipcap/v1/caption", body, headers={"Origin": origin}).status == 403, origin


@pytest.mark.parametrize("argv, why", [
    (["--nowebui"], "--nowebui"),
    (["--api", "--listen"], "--listen"),
    (["--api", "--server-name", "192.168.1.5"], "--server-name 192.168.1.5"),
    (["--api", "--share"], "--share"),
])
def test_exposed_webui_refuses_batch_tagging_over_http_until_folders_are_set(mode, make_webui,
                                                                              tmp_path, argv, why):
    folder = dataset(tmp_path / "ds")
    webui = make_webui(mode, argv=argv)
    webui.create_ui()
    app = webui.start(demo=None if "--nowebui" in argv else "current")
    with serve(app) as c:
        r = c.post("/clipcap/v1/batch", {"inputs": [str(folder)], "model": "shapes-demo"},
                   headers={"Host": "my-pc.lan:7860"})  # a network name: allowed on a network bind
        assert r.status == 503 and r.error_type == "batch_unavailable", r.body
        message = r.json()["error"]["message"]
        assert SETTING in message and why in message and "--batch-root" not in message
        assert c.get("/clipcap/v1/models", headers={"Host": "my-pc.lan:7860"}).status == 200
    assert not list(folder.glob("*.txt"))
    from modules import shared

    shared.opts.set(SETTING, str(folder))  # the user names the folder: now it works, there and only there
    app = webui.start(demo=None if "--nowebui" in argv else "current")
    with serve(app) as c:
        r = c.post("/clipcap/v1/batch", {"inputs": [str(folder)], "model": "shapes-demo"})
        assert r.status == 202, r.body
        assert wait_for_batch_job(c, r.json()["id"])["written"] == 2
        r = c.post("/clipcap/v1/batch", {"inputs": [str(tmp_path)], "model": "shapes-demo"})
        assert r.status == 403 and "outside the allowed folders" in r.text


def test_local_webui_api_tags_only_its_own_folders_by_default(mode, make_webui, tmp_path):
    webui = make_webui(mode, argv=["--api"])
    webui.create_ui()
    own = dataset(webui.root / "outputs" / "txt2img-images" / "2026-12-04")
    train = dataset(webui.root / "train" / "lora1")
    home = dataset(tmp_path / "home" / "pictures")
    autostart = tmp_path / "home" / ".config" / "autostart"
    with serve(webui.start()) as c:
        for folder in (own, train):
            r = c.post("/clipcap/v1/batch", {"inputs": [str(folder)], "model": "shapes-demo"})
            assert r.status == 202, r.body
            assert wait_for_batch_job(c, r.json()["id"])["written"] == 2
        r = c.post("/clipcap/v1/batch", {"inputs": [str(home)], "model": "shapes-demo"})
        assert r.status == 403 and r.error_type == "forbidden_path"
        for bad in ({"output_dir": str(autostart)}, {"output_dir": "/"}, {"inputs": ["/"]},
                    {"output_dir": str(own / ".." / ".." / ".." / ".." / "home")}):
            r = c.post("/clipcap/v1/batch", {"inputs": [str(own)], "model": "shapes-demo", **bad})
            assert r.status == 403, (bad, r.body)
        r = c.post("/clipcap/v1/batch", {"inputs": [str(own)], "model": "shapes-demo", "caption_ext": ".desktop"})
        assert r.status == 422 and "clipcap_caption_exts" in r.text
    assert not autostart.exists() and not list(home.glob("*.txt"))


def test_caption_suffix_setting_extends_the_allow_list(mode, make_webui, tmp_path):
    folder = dataset(tmp_path / "ds")
    webui = make_webui(mode, argv=["--api"], config={SETTING: str(tmp_path), "clipcap_caption_exts": ".cap, md"})
    webui.create_ui()
    with serve(webui.start()) as c:
        r = c.post("/clipcap/v1/batch", {"inputs": [str(folder)], "model": "shapes-demo", "caption_ext": ".cap"})
        assert r.status == 202, r.body
        assert wait_for_batch_job(c, r.json()["id"])["written"] == 2
        assert c.post("/clipcap/v1/batch", {"inputs": [str(folder)], "caption_ext": ".sh"}).status == 422
    assert sorted(p.name for p in folder.glob("*.cap")) == ["shapes_00.cap", "shapes_01.cap"]


def test_the_tab_names_the_setting_when_batch_tagging_is_off(mode, make_webui):
    webui = make_webui(mode, argv=["--listen"])
    webui.create_ui()
    from modules import ui

    (tab,) = [blocks for blocks, _, elem_id in ui.tabs_built["interfaces"] if elem_id == "clipcap"]
    why = tab.clipcap_batch.batch_unavailable()
    assert SETTING in why and "--listen" in why and "--batch-root" not in why
