"""Caption review over HTTP: POST /review (scored, paged table), PUT /review/caption, POST /review/undo, under the
batch routes' folder rules."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("httpx")  # fastapi.testclient needs it

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from _review_data import tagged_folder  # noqa: E402
from lib_clipcap.app.api import API_PREFIX, mount_api  # noqa: E402
from lib_clipcap.app.service import ModelManager  # noqa: E402

DEMO = "shapes-demo"


@pytest.fixture()
def root(tmp_path):
    root = tmp_path / "allowed"
    tagged_folder(root / "set", seed=11, images=5, captioned=4, wrong=3)
    return root


@pytest.fixture()
def client(demo_captioner, root, tmp_path):
    from lib_clipcap.batch.jobs import JobManager

    manager = ModelManager(models_dir=tmp_path / "models", loader=lambda name: demo_captioner)
    app = FastAPI()
    mount_api(app, manager, default_model=DEMO, job_manager=JobManager(manager, [root]))
    return TestClient(app)


def _error(r, status: int, type_: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["type"] == type_, body
    return body["message"]


def test_review_is_off_without_batch_folders(demo_captioner, tmp_path):
    manager = ModelManager(models_dir=tmp_path, loader=lambda name: demo_captioner)
    app = FastAPI()
    mount_api(app, manager, default_model=DEMO)
    c = TestClient(app)
    assert "--batch-root" in _error(c.post(f"{API_PREFIX}/review", json={"folder": str(tmp_path)}), 503,
                                    "review_unavailable")
    _error(c.put(f"{API_PREFIX}/review/caption", json={"folder": str(tmp_path), "image": "a.png", "caption": "x"}),
           503, "review_unavailable")


def test_scan_scores_sorts_and_pages(client, root):
    r = client.post(f"{API_PREFIX}/review", json={"folder": "set", "limit": 2})  # relative: under the allowed root
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 5 and len(body["rows"]) == 2 and body["summary"]["missing"] == 1
    assert body["rows"][0]["flags"] == ["missing"]
    assert body["rows"][1]["image"].endswith("3.png")  # the wrong caption: lowest CLIP-S
    assert body["grammar"] is True and body["rows"][1]["grammar"] is not None
    assert body["scoring"]["images_encoded"] == 5  # the uncaptioned image too: ready for its caption
    page2 = client.post(f"{API_PREFIX}/review", json={"folder": "set", "limit": 2, "offset": 2,
                                                       "rescan": False}).json()
    assert page2["scoring"] is None  # the kept scan's scores: nothing encoded again
    scores = [r["clip_score"] for r in body["rows"][1:] + page2["rows"]]
    assert scores == sorted(scores)
    again = client.post(f"{API_PREFIX}/review", json={"folder": "set"}).json()  # a rescan: features from disk
    assert again["scoring"]["images_encoded"] == 0 and again["scoring"]["images_cached"] == 5
    only = client.post(f"{API_PREFIX}/review", json={"folder": "set", "flags": ["missing"], "scores": False}).json()
    assert [Path(r["image"]).name for r in only["rows"]] == ["4.png"]


def test_folder_rules_are_batch_rules(client, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    assert "outside the allowed folders" in _error(
        client.post(f"{API_PREFIX}/review", json={"folder": str(outside)}), 403, "forbidden_path")
    assert "outside the allowed folders" in _error(
        client.post(f"{API_PREFIX}/review", json={"folder": "../outside"}), 403, "forbidden_path")
    _error(client.post(f"{API_PREFIX}/review", json={"folder": "nope"}), 404, "folder_not_found")
    msg = _error(client.post(f"{API_PREFIX}/review", json={"folder": "set", "caption_ext": ".sh"}), 422,
                 "invalid_option")
    assert ".sh" in msg
    _error(client.post(f"{API_PREFIX}/review", json={"folder": "set", "limit": 5000}), 422, "invalid_option")
    _error(client.post(f"{API_PREFIX}/review", json={"folder": "set", "bogus": 1}), 422, "invalid_option")
    r = client.post(f"{API_PREFIX}/review", content=b"folder=set",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415


def test_save_rescore_refuse_and_undo(client, root):
    cap = root / "set" / "3.txt"
    before = cap.read_bytes()
    client.post(f"{API_PREFIX}/review", json={"folder": "set"})
    worst = client.post(f"{API_PREFIX}/review", json={"folder": "set", "rescan": False}).json()["rows"][1]
    from lib_clipcap.shapes import make_scene

    right = make_scene(11, 3).captions[0]  # what the picture shows
    r = client.put(f"{API_PREFIX}/review/caption", json={"folder": "set", "image": "3.png", "caption": right})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "saved" and body["undo_depth"] == 1
    assert body["row"]["caption"] == right and body["row"]["clip_score"] > worst["clip_score"] + 0.5  # rescored
    assert cap.read_text(encoding="utf-8") == right
    # One line only: a newline (or any control character) is refused and nothing is written.
    msg = _error(client.put(f"{API_PREFIX}/review/caption", json={"folder": "set", "image": "3.png",
                                                                  "caption": "two\nlines"}), 422, "invalid_caption")
    assert "control character" in msg
    _error(client.put(f"{API_PREFIX}/review/caption", json={"folder": "set", "image": "3.png", "caption": 5}), 422,
           "invalid_caption")
    assert cap.read_text(encoding="utf-8") == right
    _error(client.put(f"{API_PREFIX}/review/caption", json={"folder": "set", "image": "nope.png", "caption": "x"}),
           404, "unknown_image")
    # A caption for the image without one; then undo twice.
    r = client.put(f"{API_PREFIX}/review/caption", json={"folder": "set", "image": str(root / "set" / "4.png"),
                                                         "caption": "new caption"})
    assert r.json()["row"]["flags"] == []
    undo = client.post(f"{API_PREFIX}/review/undo", json={"folder": "set"}).json()
    assert [u["status"] for u in undo["undone"]] == ["removed"] and not (root / "set" / "4.txt").exists()
    undo = client.post(f"{API_PREFIX}/review/undo", json={"folder": "set"}).json()
    assert [u["status"] for u in undo["undone"]] == ["restored"] and undo["undo_depth"] == 0
    assert cap.read_bytes() == before
    assert undo["rows"][0]["clip_score"] == pytest.approx(worst["clip_score"], abs=1e-5)


def test_the_review_service_lets_an_unloaded_model_go(root, tmp_path):
    """Scoring through the service must not keep the model (its CLIP, a GPU's worth of weights) alive after the
    manager unloads it."""
    import gc
    import weakref

    from lib_clipcap import Captioner
    from lib_clipcap.review.service import ReviewService

    manager = ModelManager(models_dir=tmp_path / "models",
                           loader=lambda name: Captioner.from_pretrained(name, device="cpu"))
    svc = ReviewService(manager)
    table = svc.table(svc.params(str(root / "set")))
    svc.score(table, DEMO)
    assert table.rows[0].clip_score is not None or table.rows[0].caption is None
    with manager.using(DEMO) as m:
        clip = weakref.ref(m.clip)
    assert manager.unload() == [DEMO]
    gc.collect()
    assert clip() is None
    svc.score(table, DEMO)  # loads it again and reuses the text memo
