"""/clipcap/v1 on the host's FastAPI app: mounted in on_app_started, protected by --api-auth like /sdapi/v1/*."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from _api_helpers import png_b64, wait_for_batch_job
from fastapi.testclient import TestClient


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def flat_routes(routes_list, prefix=""):
    """Every route, also inside the router wrappers newer FastAPI keeps instead of copying routes."""
    for r in routes_list:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            yield from flat_routes(inner.routes, prefix + getattr(getattr(r, "include_context", None), "prefix", ""))
        elif hasattr(r, "path"):
            yield prefix + r.path, tuple(sorted(getattr(r, "methods", None) or ()))


def routes(app, prefix="/clipcap/v1/"):
    return [r for r in flat_routes(app.routes) if r[0].startswith(prefix)]


def test_routes_answer_without_auth(mode, make_webui, fake_models):
    webui = make_webui(mode, argv=["--api"])
    webui.create_ui()
    fake_models()
    client = TestClient(webui.start(), base_url="http://127.0.0.1:7860")
    r = client.get("/clipcap/v1/models")
    assert r.status_code == 200 and "shapes-demo" in [m["name"] for m in r.json()["models"]]
    r = client.post("/clipcap/v1/caption", json={"image": png_b64(), "model": "shapes-demo", "decoding": "greedy"})
    assert r.status_code == 200, r.text
    assert r.json()["caption"] == "a 20x10 picture"
    r = client.post("/clipcap/v1/caption", json={"image": "not base64!"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_base64"
    assert webui.errors() == []


def test_api_auth_protects_our_routes_like_the_hosts(mode, make_webui, fake_models):
    webui = make_webui(mode, argv=["--api", "--api-auth", "alice:s3cret,bob:other"])
    webui.create_ui()
    fake_models()
    client = TestClient(webui.start(), base_url="http://127.0.0.1:7860")
    host_route = {"image": png_b64()}
    for path, body in (("/clipcap/v1/caption", {"image": png_b64(), "model": "shapes-demo"}),
                       ("/sdapi/v1/interrogate", host_route)):
        r = client.post(path, json=body)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].lower().startswith("basic"), path
        assert client.post(path, json=body, headers=basic("alice", "wrong")).status_code == 401, path
        assert client.post(path, json=body, headers=basic("mallory", "s3cret")).status_code == 401, path
        assert client.post(path, json=body, headers=basic("alice", "s3cret")).status_code == 200, path
        assert client.post(path, json=body, headers=basic("bob", "other")).status_code == 200, path
    assert client.get("/clipcap/v1/models").status_code == 401
    assert client.get("/clipcap/v1/models", headers=basic("bob", "other")).status_code == 200


def test_no_routes_without_the_api_flag(mode, make_webui):
    """Like /sdapi/v1: without --api a --gradio-auth protected UI gains no unprotected side door."""
    webui = make_webui(mode)
    app = webui.start()
    assert routes(app) == []
    assert TestClient(app, base_url="http://127.0.0.1:7860").get("/clipcap/v1/models").status_code == 404


def test_nowebui_mounts_with_demo_none(mode, make_webui, fake_models):
    webui = make_webui(mode, argv=["--nowebui", "--api-auth", "u:p"])
    webui.create_ui()
    fake_models()
    client = TestClient(webui.start(demo=None), base_url="http://127.0.0.1:7861")
    assert client.get("/clipcap/v1/models").status_code == 401
    assert client.get("/clipcap/v1/models", headers=basic("u", "p")).status_code == 200


def test_malformed_api_auth_fails_closed(mode, make_webui, capsys):
    make_webui(mode, argv=["--api", "--api-auth", "alice"])
    from fastapi import FastAPI

    from clipcap_webui import routes as glue

    with pytest.raises(ValueError, match="user:password"):
        glue.api_credentials()
    app = FastAPI()
    assert glue.mount(app) is False
    assert routes(app) == []
    assert "API not mounted" in capsys.readouterr().out


def test_reload_does_not_duplicate_routes(mode, make_webui, fake_models):
    webui = make_webui(mode, argv=["--api"])
    fake_models()
    app = webui.start()
    from modules import script_callbacks

    before = routes(app)
    script_callbacks.app_started_callback(webui.demo, app)  # the host runs it again after a reload
    assert routes(app) == before and len(before) == len(set(before))


@pytest.mark.parametrize("argv, local", [
    ([], True),
    (["--server-name", "127.0.0.1"], True),  # the host calls any --server-name "non-local"; a loopback bind is local
    (["--nowebui", "--server-name", "localhost"], True),
    (["--listen"], False),
    (["--server-name", "0.0.0.0"], False),
    (["--nowebui"], False),  # the API-only server binds every interface without --listen
    (["--share"], False),
    (["--ngrok", "token"], False),
])
def test_exposure_is_read_from_what_the_host_binds(mode, make_webui, argv, local):
    make_webui(mode, argv=argv)
    from clipcap_webui import host

    exp = host.exposure()
    assert exp.local is local, exp
    assert (exp.reason == "") is local and (local or exp.reason.split()[0].split("=")[0] in " ".join(argv)
                                             or exp.reason.startswith("--nowebui"))


@pytest.mark.parametrize("argv, tab, api", [
    ([], "everywhere", "own"),
    (["--server-name", "127.0.0.1"], "everywhere", "own"),
    (["--listen"], None, None),  # exposed: off unless folders are configured (the host's rule for risky features)
    (["--nowebui"], None, None),
    (["--share"], None, None),
    (["--listen", "--enable-insecure-extension-access"], "everywhere", "own"),
    (["--hide-ui-dir-config"], None, None),
])
def test_batch_tagging_default_folders(mode, make_webui, argv, tab, api):
    """Without the setting the tab may use any local folder, the HTTP API only the WebUI's outputs and train
    folders (never '/'), and neither while the WebUI is exposed."""
    webui = make_webui(mode, argv=argv)
    from clipcap_webui import host, models

    expected = {None: None, "everywhere": [Path(os.sep)],
                "own": [webui.root / "outputs", webui.root / "train"]}
    assert host.batch_roots() == expected[tab]
    got = host.batch_roots(for_api=True)
    assert got is None if api is None else (got[:2] == expected["own"] and Path(os.sep) not in got), got
    assert (models.get_job_manager() is not None) is (tab is not None)
    assert (models.get_job_manager(for_api=True) is not None) is (api is not None)


def test_configured_folders_win_for_every_face(mode, make_webui, tmp_path):
    make_webui(mode, argv=["--listen"], config={"clipcap_batch_roots": f"{tmp_path / 'a'}\n{tmp_path / 'b'}"})
    from clipcap_webui import host

    assert host.batch_roots() == host.batch_roots(for_api=True) == [tmp_path / "a", tmp_path / "b"]


def test_batch_tagging_through_the_webui_api(mode, make_webui, tmp_path):
    """The configured folder is tagged with the real demo model (under the host's GPU etiquette); others refused."""
    import shutil

    from lib_clipcap.registry import package_path

    folder, elsewhere = tmp_path / "dataset", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    for name in ("shapes_00.png", "shapes_01.jpg"):
        shutil.copy(package_path(f"bundled:assets/samples/{name}"), folder / name)
    webui = make_webui(mode, argv=["--api"], config={"clipcap_batch_roots": str(folder)})
    webui.create_ui()
    from modules import ui

    (tab,) = [blocks for blocks, _, elem_id in ui.tabs_built["interfaces"] if elem_id == "clipcap"]
    assert tab.clipcap.batch_unavailable() is None  # the tab's batch section is live
    client = TestClient(webui.start(), base_url="http://127.0.0.1:7860")
    assert client.post("/clipcap/v1/batch", json={"inputs": [str(elsewhere)]}).status_code == 403
    r = client.post("/clipcap/v1/batch", json={"model": "shapes-demo", "inputs": [str(folder)]})
    assert r.status_code == 202, r.text
    status = wait_for_batch_job(client, r.json()["id"])
    assert status["state"] == "done" and status["written"] == 2, status
    assert (folder / "shapes_00.txt").read_text().strip() and (folder / "shapes_01.txt").read_text().strip()
