"""The HTTP API (/clipcap/v1): captions, every error case with its JSON body, auth, concurrency, batch wiring."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")  # fastapi.testclient needs it

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from _api_helpers import wait_for_batch_job  # noqa: E402
from lib_clipcap import shapes  # noqa: E402
from lib_clipcap.app.api import API_PREFIX, mount_api, parse_credentials  # noqa: E402
from lib_clipcap.errors import ClipCapError  # noqa: E402
from lib_clipcap.app.service import LocalDevicePolicy, ModelManager  # noqa: E402

DEMO = "shapes-demo"


class CountingModel:
    """Wraps the shared demo captioner: counts calls and how many run at once; ``unload`` leaves it usable."""

    def __init__(self, inner, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.active = 0
        self.max_active = 0
        self.calls = 0
        self.unloads = 0
        self._lock = threading.Lock()

    def caption(self, images, **kw):
        with self._lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)
            return self.inner.caption(images, **kw)
        finally:
            with self._lock:
                self.active -= 1

    def unload(self):
        self.unloads += 1

    def __getattr__(self, name):  # batch jobs use the captioner's lower-level methods
        return getattr(self.inner, name)


@pytest.fixture
def counting(demo_captioner):
    return CountingModel(demo_captioner)


@pytest.fixture
def loads():
    return []


@pytest.fixture
def manager(counting, loads, tmp_path):
    def loader(name):
        loads.append(name)
        return counting

    return ModelManager(models_dir=tmp_path, loader=loader)


def make_client(manager, **kw) -> TestClient:
    app = FastAPI()
    kw.setdefault("default_model", DEMO)
    mount_api(app, manager, **kw)
    return TestClient(app)


@pytest.fixture
def client(manager):
    return make_client(manager)


def png_bytes(index: int = 0, size: int | None = None) -> bytes:
    img = shapes.heldout_scenes(index + 1)[index].render()
    if size:
        img = img.resize((size, size))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_error(r, status: int, type_: str, *fragments: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["type"] == type_, err
    for f in fragments:
        assert f in err["message"], err["message"]
    return err


def caption_ok(client, **extra) -> dict:
    r = client.post(f"{API_PREFIX}/caption", json={"image": b64(png_bytes()), **extra})
    assert r.status_code == 200, r.text
    return r.json()


# --------------------------------------------------------------------------------------------------------- captions
def test_caption_returns_caption_candidates_scores_and_timing(client, demo_captioner):
    data = png_bytes()
    body = caption_ok(client, decoding="beam", beam_size=4, num_candidates=3)
    expected = demo_captioner.caption(Image.open(io.BytesIO(data)), decoding="beam", beam_size=4, num_candidates=3)[0]
    assert body["caption"] == expected.text and body["caption"].endswith(".")
    assert body["model"] == DEMO
    assert [c["text"] for c in body["candidates"]] == [c.text for c in expected.candidates]
    assert len(body["candidates"]) == 3
    scores = [c["score"] for c in body["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert body["keywords"] is None
    assert set(body["timing"]) == {"decode_ms", "caption_ms", "total_ms"}
    assert body["timing"]["total_ms"] >= body["timing"]["caption_ms"] > 0


def test_data_urls_urlsafe_and_wrapped_base64_give_the_same_caption(client):
    data = png_bytes(1)
    plain = client.post(f"{API_PREFIX}/caption", json={"image": b64(data)}).json()["caption"]
    variants = [
        "data:image/png;base64," + b64(data),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
        "\n".join(b64(data)[i:i + 76] for i in range(0, len(b64(data)), 76)),
    ]
    for v in variants:
        r = client.post(f"{API_PREFIX}/caption", json={"image": v, "model": "SHAPES-DEMO"})
        assert r.status_code == 200, r.text
        assert r.json()["caption"] == plain
        assert r.json()["model"] == DEMO


def test_decoding_options_reach_the_model(client):
    greedy = caption_ok(client, decoding="greedy", num_candidates=5)  # greedy ignores the candidates setting
    assert len(greedy["candidates"]) == 1
    short = caption_ok(client, decoding="greedy", max_new_tokens=2)
    assert len(short["caption"].split()) <= 2 < len(greedy["caption"].split())
    samples = caption_ok(client, decoding="sample", num_candidates=4, temperature=2.0, seed=3)
    assert len(samples["candidates"]) == 4
    assert samples == {**caption_ok(client, decoding="sample", num_candidates=4, temperature=2.0, seed=3),
                       "timing": samples["timing"]}


def test_rerank_and_sbg_keywords_come_through(client, tmp_path):
    from lib_clipcap.captioner import Candidate, CaptionResult
    from lib_clipcap.registry import list_models

    r = client.post(f"{API_PREFIX}/caption", json={"image": b64(png_bytes()), "decoding": "beam", "rerank": "clip"})
    if r.status_code == 400 and "not available" in r.text:
        pytest.skip("CLIP re-ranking is not in this build")
    assert r.status_code == 200, r.text
    assert all(c["clip_score"] is not None for c in r.json()["candidates"])

    class Guesser:  # stands in for an SBG model: the API passes its keywords through
        def caption(self, images, **kw):
            return [CaptionResult("a dog runs.", -0.5, [Candidate("a dog runs.", -0.5, 0.9)], keywords=["dog", "run"])]

        def unload(self):
            pass

    sbg = (list_models(kind="sbg") or [DEMO])[0]
    client = make_client(ModelManager(models_dir=tmp_path, loader=lambda name: Guesser()))
    body = client.post(f"{API_PREFIX}/caption", json={"image": b64(png_bytes()), "model": sbg}).json()
    assert body["keywords"] == ["dog", "run"] and body["candidates"][0]["clip_score"] == 0.9
    assert body["model"] == sbg


# ----------------------------------------------------------------------------------------------------------- errors
TRUNCATED = png_bytes()[:200]

BAD_REQUESTS = [
    ({"image": "@@@ not base64 @@@"}, 400, "invalid_base64", "base64"),
    ({"image": "data:image/png,rawbytes"}, 400, "invalid_base64", "data URL"),
    ({"image": b64(b"hello, this is text, not a picture")}, 400, "not_an_image", "not an image"),
    ({"image": b64(TRUNCATED)}, 400, "not_an_image", ""),
    ({"image": b64(png_bytes()), "model": "no-such-model"}, 404, "unknown_model", "shapes-demo"),
    ({"image": b64(png_bytes()), "temperature": 0}, 422, "invalid_option", "temperature=0"),
    ({"image": b64(png_bytes()), "top_p": 1.5}, 422, "invalid_option", "top_p=1.5"),
    ({"image": b64(png_bytes()), "decoding": "nucleus"}, 422, "invalid_option", "'nucleus'"),
    ({"image": b64(png_bytes()), "beam_size": "5"}, 422, "invalid_option", "beam_size='5'"),
    ({"image": b64(png_bytes()), "max_new_tokens": 0}, 422, "invalid_option", "max_new_tokens=0"),
    ({"image": b64(png_bytes()), "rerank": "bleu"}, 422, "invalid_option", "rerank='bleu'"),
    ({"image": b64(png_bytes()), "decoding": "beam", "beam_size": 2, "num_candidates": 4}, 422, "invalid_option",
     "beam_size"),
    ({"image": b64(png_bytes()), "temprature": 0.7}, 422, "invalid_option", "unknown field 'temprature'"),
    ({}, 422, "invalid_option", "'image' is required"),
    ({"image": 12345}, 422, "invalid_option", "'image' must be"),
]


@pytest.mark.parametrize("body,status,type_,fragment", BAD_REQUESTS,
                         ids=[f"{c[2]}-{i}" for i, c in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_a_json_4xx_and_the_server_keeps_answering(client, body, status, type_, fragment):
    err = assert_error(client.post(f"{API_PREFIX}/caption", json=body), status, type_, fragment)
    if type_ == "invalid_option" and "field" in err and err["field"] != "image":
        assert err["field"] in str(body) or err["field"] == "num_candidates"
    if type_ == "unknown_model":
        assert DEMO in err["valid"]
    caption_ok(client)


def test_malformed_json_and_non_object_bodies(client):
    assert_error(client.post(f"{API_PREFIX}/caption", content=b"{not json", headers={"content-type": "application/json"}),
                 400, "invalid_json", "not valid JSON")
    assert_error(client.post(f"{API_PREFIX}/caption", json=["a", "list"]), 422, "invalid_request", "JSON object")
    caption_ok(client)


def test_too_large_images_get_413(manager):
    big = png_bytes(0, size=256)
    small_limit = make_client(manager, max_image_bytes=len(big) - 1)
    assert_error(small_limit.post(f"{API_PREFIX}/caption", json={"image": b64(big)}), 413, "image_too_large", "limit")
    # a body far over the limit is refused from its Content-Length, before being read
    assert_error(small_limit.post(f"{API_PREFIX}/caption", json={"image": b64(big * 40)}), 413, "request_too_large")
    few_pixels = make_client(manager, max_pixels=255 * 255)
    assert_error(few_pixels.post(f"{API_PREFIX}/caption", json={"image": b64(big)}), 413, "image_too_large",
                 "256x256")
    r = few_pixels.post(f"{API_PREFIX}/caption", json={"image": b64(png_bytes())})  # 64x64 still fine
    assert r.status_code == 200, r.text


def test_missing_model_files_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real = ModelManager(models_dir=tmp_path, policy=LocalDevicePolicy(device="cpu"))
    client = make_client(real)
    err = assert_error(client.post(f"{API_PREFIX}/caption", json={"image": b64(png_bytes()), "model": "flickr8k"}),
                       503, "model_files_missing", "flickr8k.pt", str(tmp_path))
    assert "Download" in err["message"]
    err = assert_error(client.post(f"{API_PREFIX}/caption", json={"image": b64(png_bytes()), "model": "coco"}),
                       503, "model_files_missing", "coco_weights.pt", str(tmp_path))


# ----------------------------------------------------------------------------------------------- models and unload
def test_models_lists_the_registry_with_installed_and_loaded(client, tmp_path):
    before = client.get(f"{API_PREFIX}/models").json()
    rows = {m["name"]: m for m in before["models"]}
    assert rows[DEMO]["installed"] is True and rows[DEMO]["source"] == "bundled"
    assert rows["flickr8k"]["installed"] is False  # the test's models folder is empty
    assert rows["shapes-sbg"]["installed"] is True  # a bundled SBG generator folder, not a checkpoint file
    assert rows["sbg-flickr"]["installed"] is False
    assert rows[DEMO]["default"] is True and before["default"] == DEMO
    assert before["loaded"] == [] and not rows[DEMO]["loaded"]
    caption_ok(client)
    after = {m["name"]: m for m in client.get(f"{API_PREFIX}/models").json()["models"]}
    assert after[DEMO]["loaded"] is True


def test_unload_one_or_all(client, counting):
    assert client.post(f"{API_PREFIX}/unload").json() == {"unloaded": []}
    caption_ok(client)
    assert client.post(f"{API_PREFIX}/unload", json={"model": "shapes-demo"}).json() == {"unloaded": [DEMO]}
    assert counting.unloads == 1
    caption_ok(client)
    assert client.post(f"{API_PREFIX}/unload", json={}).json() == {"unloaded": [DEMO]}
    assert_error(client.post(f"{API_PREFIX}/unload", json={"model": "nope"}), 404, "unknown_model")
    assert_error(client.post(f"{API_PREFIX}/unload", json={"name": DEMO}), 422, "invalid_option", "'name'")


# ------------------------------------------------------------------------------------------------------------ auth
CREDS = {"alice": "s3cret", "bob": "pa:ss wörd"}


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_parse_credentials_uses_the_webui_format():
    assert parse_credentials("alice:s3cret,bob:pa:ss wörd") == CREDS
    assert parse_credentials(" alice:s3cret , ") == {"alice": "s3cret"}
    assert parse_credentials("") is None and parse_credentials(None) is None
    with pytest.raises(ClipCapError, match="'justauser' must look like user:password"):
        parse_credentials("alice:x,justauser")


@pytest.mark.parametrize("headers", [
    {},
    basic("alice", "wrong"),
    basic("mallory", "s3cret"),
    basic("alice", "s3cret!"),
    {"Authorization": "Basic !!!"},
    {"Authorization": "Bearer s3cret"},
    {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
])
def test_auth_refuses_missing_or_wrong_credentials(manager, headers):
    client = make_client(manager, credentials=CREDS)
    for r in (client.get(f"{API_PREFIX}/models", headers=headers),
              client.post(f"{API_PREFIX}/caption", json={"image": b64(png_bytes())}, headers=headers),
              client.post(f"{API_PREFIX}/unload", headers=headers),
              client.get(f"{API_PREFIX}/batch/x", headers=headers)):
        assert_error(r, 401, "unauthorized", "Basic")
        assert r.headers["www-authenticate"].startswith("Basic realm=")


def test_auth_accepts_every_configured_user(manager):
    client = make_client(manager, credentials=CREDS)
    for user, password in CREDS.items():
        r = client.post(f"{API_PREFIX}/caption", json={"image": b64(png_bytes())}, headers=basic(user, password))
        assert r.status_code == 200, r.text


def test_no_credentials_means_no_auth(client):
    assert client.get(f"{API_PREFIX}/models").status_code == 200


# ----------------------------------------------------------------------------------------------------- concurrency
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(manager):
    """The API on a real uvicorn at 127.0.0.1:<free port>, in a thread."""
    uvicorn = pytest.importorskip("uvicorn")
    app = FastAPI()
    mount_api(app, manager, default_model=DEMO)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_parallel_requests_all_succeed_one_model_call_at_a_time(live_server, counting, loads):
    import httpx

    counting.delay = 0.15  # long enough for requests to overlap if nothing serialised them
    payload = {"image": b64(png_bytes()), "decoding": "greedy"}
    results: list = [None] * 8
    finished: list[float] = []

    def post(i: int) -> None:
        with httpx.Client(timeout=60) as c:
            results[i] = c.post(f"{live_server}{API_PREFIX}/caption", json=payload)
            finished.append(time.monotonic())

    threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    while counting.calls == 0:  # the first caption is running: the event loop must still answer
        time.sleep(0.01)
    with httpx.Client(timeout=30) as c:
        bad = c.post(f"{live_server}{API_PREFIX}/caption", json={"image": "@@@"})
        bad_done = time.monotonic()
        models = c.get(f"{live_server}{API_PREFIX}/models")  # reads the manager: may wait for a model call
    for t in threads:
        t.join(60)
    assert models.status_code == 200 and bad.status_code == 400
    assert bad_done < max(finished), "the event loop was blocked while captions ran"
    assert [r.status_code for r in results] == [200] * 8, [r.text for r in results if r.status_code != 200]
    assert len({r.json()["caption"] for r in results}) == 1
    assert counting.calls == 8
    assert counting.max_active == 1  # the manager's lock serialises model calls
    assert loads == [DEMO]  # loaded once, shared


# ----------------------------------------------------------------------------------------------------------- batch
def test_batch_routes_say_when_batch_tagging_is_off(client):
    assert_error(client.post(f"{API_PREFIX}/batch", json={"folder": "/tmp"}), 503, "batch_unavailable",
                 "--batch-root")
    assert_error(client.get(f"{API_PREFIX}/batch/abc"), 503, "batch_unavailable")
    assert_error(client.delete(f"{API_PREFIX}/batch/abc"), 503, "batch_unavailable")


def test_batch_jobs_tag_a_folder_through_the_api(manager, tmp_path):
    pytest.importorskip("lib_clipcap.batch")
    from lib_clipcap.batch.jobs import JobManager

    root = tmp_path / "allowed"
    folder = root / "set"
    folder.mkdir(parents=True)
    for i, scene in enumerate(shapes.heldout_scenes(2)):
        scene.render().save(folder / f"img{i}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "elsewhere").mkdir()
    client = make_client(manager, job_manager=JobManager(manager, [root]))

    r = client.post(f"{API_PREFIX}/batch", json={"inputs": ["set"], "prefix": "sks", "workers": 0,
                                                  "decoding": "greedy", "max_new_tokens": 20})
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    status = wait_for_batch_job(client, job, timeout=60, poll=0.1)
    assert status["state"] == "done", status
    assert (status["written"], status["skipped"], status["failed"]) == (2, 0, 1)
    assert status["model"] == DEMO and status["failures"][0]["path"].endswith("broken.jpg")
    assert (folder / "img0.txt").read_text(encoding="utf-8").startswith("sks, ")
    assert client.delete(f"{API_PREFIX}/batch/{job}").json()["state"] == "done"  # finished: nothing to cancel

    post = lambda body: client.post(f"{API_PREFIX}/batch", json=body)  # noqa: E731
    assert_error(post({"inputs": [str(tmp_path / "elsewhere")]}), 403, "forbidden_path", "elsewhere")
    assert_error(post({"inputs": ["../elsewhere"]}), 403, "forbidden_path")
    assert_error(post({"inputs": ["missing"]}), 404, "folder_not_found", "missing")
    assert_error(post({"inputs": ["set"], "existing": "merge"}), 422, "invalid_option", "existing='merge'")
    assert_error(post({"inputs": ["set"], "max_new_tokens": -1}), 422, "invalid_option", "max_new_tokens=-1")
    assert_error(post({"inputs": ["set"], "frobnicate": 1}), 422, "invalid_option", "'frobnicate'")
    assert_error(post({"inputs": ["set"], "model": "nope"}), 404, "unknown_model")
    assert_error(post({}), 422, "invalid_option", "inputs")
    assert_error(client.get(f"{API_PREFIX}/batch/nope"), 404, "unknown_job", "'nope'")
    assert_error(client.delete(f"{API_PREFIX}/batch/nope"), 404, "unknown_job")


# ------------------------------------------------------------------------------------------------------- mounting
def test_mount_twice_replaces_the_routes_and_openapi_documents_the_options(manager):
    app = FastAPI()
    mount_api(app, manager, default_model=DEMO)
    mount_api(app, manager, default_model=DEMO)
    client = TestClient(app)
    schema = client.get("/openapi.json").json()
    ours = sorted(p for p in schema["paths"] if p.startswith(API_PREFIX))
    assert ours == sorted([f"{API_PREFIX}/caption", f"{API_PREFIX}/models", f"{API_PREFIX}/unload",
                           f"{API_PREFIX}/batch", f"{API_PREFIX}/batch/{{job_id}}", f"{API_PREFIX}/batch/runs",
                           f"{API_PREFIX}/batch/undo", f"{API_PREFIX}/review",
                           f"{API_PREFIX}/review/caption", f"{API_PREFIX}/review/tags", f"{API_PREFIX}/review/undo"])
    op_ids = [op["operationId"] for p in ours for op in schema["paths"][p].values()]
    assert len(op_ids) == len(set(op_ids))
    from lib_clipcap.app.api import _is_ours

    # no route registered twice: 11 routes (FastAPI < 0.16x copies them) or one included-router entry (newer)
    assert sum(1 for r in app.router.routes if _is_ours(r)) in (1, 11)
    body = schema["paths"][f"{API_PREFIX}/caption"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"image", "model", "decoding", "top_p", "rerank"} <= set(body["properties"])
    assert client.get(f"{API_PREFIX}/models").status_code == 200


def test_batch_jobs_write_tags_and_refuse_bad_tag_settings_by_field(manager, tmp_path):
    """Issue 22 through the API: ``content`` and the ``tag_*`` fields reach the run (a kohya-style sidecar with the
    trigger first); a bad value is a 422 naming the field as the API spells it; a vocabulary file is read only
    inside the allowed folders, like an input."""
    pytest.importorskip("lib_clipcap.batch")
    from lib_clipcap.batch.jobs import JobManager

    root = tmp_path / "allowed"
    folder = root / "set"
    folder.mkdir(parents=True)
    shapes.heldout_scenes(1)[0].render().save(folder / "img0.png")
    (tmp_path / "outside.txt").write_text("colour: red\n", encoding="utf-8")
    client = make_client(manager, job_manager=JobManager(manager, [root]))
    post = lambda body: client.post(f"{API_PREFIX}/batch", json={"inputs": ["set"], "workers": 0, **body})  # noqa: E731

    r = post({"content": "tags", "tag_vocabulary": ["shapes"], "triggers": ["sks"], "tag_max": 3})
    assert r.status_code == 202, r.text
    status = wait_for_batch_job(client, r.json()["id"], timeout=60, poll=0.1)
    assert (status["state"], status["written"]) == ("done", 1), status
    tags = (folder / "img0.txt").read_text(encoding="utf-8").split(", ")
    assert tags[0] == "sks" and 1 <= len(tags) - 1 <= 3, tags

    assert_error(post({"content": "sentence"}), 422, "invalid_option", "content='sentence'")
    assert_error(post({"content": "tags", "tag_threshold": 1.5}), 422, "invalid_option", "tag_threshold=1.5")
    assert_error(post({"content": "tags", "tag_threshold": "NaN"}), 422, "invalid_option", "tag_threshold")
    assert_error(post({"content": "tags", "tag_max": 0}), 422, "invalid_option", "tag_max=0")
    assert_error(post({"content": "tags", "tag_style": "kebab"}), 422, "invalid_option", "tag_style='kebab'")
    assert_error(post({"content": "tags", "tag_category_limits": {"colour": -1}}), 422, "invalid_option",
                 "tag_category_limits")
    assert_error(post({"content": "tags", "tag_vocabulary": [str(tmp_path / "outside.txt")]}), 403,
                 "forbidden_path", "outside.txt")
    assert (folder / "img0.txt").read_text(encoding="utf-8").split(", ") == tags  # refusals wrote nothing
