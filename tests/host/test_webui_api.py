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
    # a host route to compare with: /sdapi/v1/interrogate where the host has one (Neo and Classic removed it)
    host_route = ("/sdapi/v1/interrogate", {"image": png_b64()}) if mode in ("a1111", "forge") else \
        ("/sdapi/v1/txt2img", {"prompt": "p", "width": 8, "height": 8, "send_images": False})
    for path, body in (("/clipcap/v1/caption", {"image": png_b64(), "model": "shapes-demo"}), host_route):
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


@pytest.mark.parametrize("argv, allowed", [
    ([], True),
    (["--server-name", "127.0.0.1"], True),
    (["--listen"], False),  # exposed: off unless folders are configured (the host's rule for risky features)
    (["--nowebui"], False),
    (["--share"], False),
    (["--listen", "--enable-insecure-extension-access"], True),
    (["--hide-ui-dir-config"], False),
])
def test_batch_tagging_default_folders(mode, make_webui, tmp_path, argv, allowed):
    """Without the setting the tab and the HTTP API alike may use only the WebUI's outputs and train folders (never
    '/': defence in depth behind the request guard), and neither while the WebUI is exposed; a folder outside them is
    refused with a message that names the setting."""
    webui = make_webui(mode, argv=argv)
    from clipcap_webui import host, models
    from lib_clipcap.batch import TagOptions
    from lib_clipcap.batch.errors import PathNotAllowedError

    for face in (False, True):
        got = host.batch_roots(for_api=face)
        assert got is None if not allowed else (got[:2] == [webui.root / "outputs", webui.root / "train"]
                                                and Path(os.sep) not in got), got
        assert (models.get_job_manager(for_api=face) is not None) is allowed
    if allowed:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        with pytest.raises(PathNotAllowedError) as e:
            models.get_job_manager().check_options(TagOptions(inputs=[str(elsewhere)]))
        assert str(elsewhere) in str(e.value) and "clipcap_batch_roots" in str(e.value), str(e.value)


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
    assert tab.clipcap_batch.batch_unavailable() is None  # the tab's batch section is live
    client = TestClient(webui.start(), base_url="http://127.0.0.1:7860")
    assert client.post("/clipcap/v1/batch", json={"inputs": [str(elsewhere)]}).status_code == 403
    r = client.post("/clipcap/v1/batch", json={"model": "shapes-demo", "inputs": [str(folder)]})
    assert r.status_code == 202, r.text
    status = wait_for_batch_job(client, r.json()["id"])
    assert status["state"] == "done" and status["written"] == 2, status
    assert (folder / "shapes_00.txt").read_text().strip() and (folder / "shapes_01.txt").read_text().strip()


def test_the_tabs_batch_section_takes_its_trigger_words_and_retention_from_the_settings(mode, make_webui, tmp_path):
    """``clipcap_batch_triggers`` fills the section's Trigger words box and ``clipcap_keep_runs`` bounds the runs
    kept by the jobs it starts; a bad stored value falls back to the default instead of breaking the tab."""
    folder = tmp_path / "dataset"
    folder.mkdir()
    webui = make_webui(mode, config={"clipcap_batch_roots": str(folder), "clipcap_batch_triggers": " sks, ohwx ",
                                     "clipcap_keep_runs": 3})
    webui.create_ui()
    from modules import ui

    (tab,) = [blocks for blocks, _, elem_id in ui.tabs_built["interfaces"] if elem_id == "clipcap"]
    box = [b for b in tab.blocks.values() if getattr(b, "elem_id", None) == "clipcap_batch_triggers"]
    assert len(box) == 1 and box[0].value == "sks, ohwx"
    opts = tab.clipcap_batch.make_tag_options(str(folder), {}, {"triggers": "sks, ohwx"})
    assert opts.triggers == ["sks", "ohwx"] and opts.keep_runs == 3
    # what the user typed in the box wins over the setting
    assert tab.clipcap_batch.make_tag_options(str(folder), {}, {"triggers": ""}).triggers == []

    from clipcap_webui import settings
    from modules import shared

    shared.opts.data["clipcap_keep_runs"] = "many"
    assert settings.batch_values()["keep_runs"] == 20


def test_the_tabs_batch_section_takes_what_it_writes_from_the_settings(mode, make_webui, tmp_path):
    """Issue 22: ``clipcap_batch_content`` and ``clipcap_tag_vocabulary`` start the section's Write and Tag
    vocabularies fields; a bad stored content falls back to the caption."""
    folder = tmp_path / "dataset"
    folder.mkdir()
    webui = make_webui(mode, config={"clipcap_batch_roots": str(folder), "clipcap_batch_content": "caption+tags",
                                     "clipcap_tag_vocabulary": "shapes"})
    webui.create_ui()
    from modules import ui

    (tab,) = [blocks for blocks, _, elem_id in ui.tabs_built["interfaces"] if elem_id == "clipcap"]
    values = {b.elem_id: getattr(b, "value", None) for b in tab.blocks.values() if getattr(b, "elem_id", None)}
    assert values["clipcap_batch_content"] == "caption+tags" and values["clipcap_batch_tag_vocabulary"] == "shapes"
    opts = tab.clipcap_batch.make_tag_options(str(folder), {}, {})
    assert opts.content == "caption+tags" and opts.tag_vocabulary == ["shapes"]

    from clipcap_webui import settings
    from modules import shared

    shared.opts.data["clipcap_batch_content"] = "poem"
    assert settings.batch_values()["content"] == "caption"
