"""JobManager: path confinement, job lifecycle (queued/running/done/cancelled/failed), interleaving with captions."""

from __future__ import annotations

import functools
import os
import threading
import time
import types

import pytest
from _batch_data import one_torch_thread, shapes_pngs

from lib_clipcap.batch import BatchInputError, PathNotAllowedError, TagOptions
from lib_clipcap.batch.jobs import JobManager
from lib_clipcap.errors import ClipCapError
from lib_clipcap.app.service import ModelManager


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread():
    with one_torch_thread():  # 2 shared cores: see _batch_data.py
        yield


class GatedModel:
    """The demo captioner whose image preprocessing stops before image number ``gate_at`` until ``gate`` is set.

    Preprocessing runs in the run's decoding thread, outside the model lock, so a test can hold a job *between*
    batches deterministically (no sleeps, no timing assumptions on a loaded machine).
    """

    def __init__(self, cap, gate_at: int) -> None:
        self.cap, self.gate_at, self.gate = cap, gate_at, threading.Event()
        self.name, self.device = "gated-demo", cap.device
        self.clip = types.SimpleNamespace(preprocess=self._preprocess)
        self.seen = 0

    def _preprocess(self, image):
        self.seen += 1
        if self.seen == self.gate_at:
            assert self.gate.wait(60), "the test never opened the gate"
        return self.cap.clip.preprocess(image)

    def decoding_options(self, **kw):
        return self.cap.decoding_options(**kw)

    def caption_pixels(self, pixels, options, **kw):
        return self.cap.caption_pixels(pixels, options, **kw)


make_images = functools.partial(shapes_pngs, seed=3)  # (folder, n) -> the PNGs' paths


@pytest.fixture
def setup(demo_captioner, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    models = {"shapes-demo": demo_captioner}
    manager = ModelManager(loader=lambda name: models[name], max_loaded=3)
    return JobManager(manager, [root]), manager, root, models


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_paths_must_stay_inside_the_allowed_roots(setup, tmp_path):
    jobs, _, root, _ = setup
    (tmp_path / "outside").mkdir()
    make_images(root / "ds", 1)
    os.symlink(tmp_path / "outside", root / "escape")
    bad = [
        (dict(inputs=[str(tmp_path / "outside")]), "input"),
        (dict(inputs=[str(root / ".." / "outside")]), "input"),  # traversal
        (dict(inputs=[str(root / "escape")]), "input"),  # symlink escape
        (dict(inputs=[str(root / "ds")], output_dir=str(tmp_path / "out")), "output folder"),
        (dict(inputs=[str(root / "ds")], manifest_jsonl=str(root / "escape" / "m.jsonl")), "manifest"),
        (dict(inputs=[str(root / "ds")], manifest_csv="../m.csv"), "manifest"),
    ]
    for kwargs, what in bad:
        with pytest.raises(PathNotAllowedError, match=rf"{what} .* is outside the allowed folders \({root}\)") as e:
            jobs.start(TagOptions(**kwargs), "shapes-demo")
        assert isinstance(e.value, PermissionError) and isinstance(e.value, ClipCapError)
    with pytest.raises(BatchInputError, match="input not found"):
        jobs.start(TagOptions(inputs=[str(root / "nope")]), "shapes-demo")
    assert jobs.jobs() == []  # nothing was queued
    checked = jobs.check_options(TagOptions(inputs=["ds"], manifest_jsonl="m.jsonl"))  # relative: under the root
    assert checked.inputs == [str(root / "ds")] and checked.manifest_jsonl == str(root / "m.jsonl")


def test_job_runs_to_done_with_counts(setup):
    jobs, _, root, _ = setup
    imgs = make_images(root / "ds", 4)
    (root / "ds" / "broken.png").write_bytes(b"\x89PNG junk")
    job = jobs.start(TagOptions(inputs=[str(root / "ds")], workers=0, batch_size=2), "shapes-demo")
    st = jobs.wait(job, timeout=60)
    assert st["state"] == "done" and st["error"] is None
    assert (st["done"], st["total"], st["written"], st["skipped"], st["failed"]) == (5, 5, 4, 0, 1)
    assert st["failures"][0]["path"].endswith("broken.png") and "Cannot load image" in st["failures"][0]["reason"]
    assert st["model"] == "shapes-demo" and st["options"]["inputs"] == [str(root / "ds")]
    assert all(p.with_suffix(".txt").is_file() for p in imgs)
    with pytest.raises(KeyError, match="'nope'"):
        jobs.status("nope")


def test_captions_are_served_between_batches_of_a_running_job(setup, demo_captioner):
    jobs, manager, root, models = setup
    make_images(root / "a", 8)
    models["gated"] = GatedModel(demo_captioner, gate_at=5)  # holds the job after 2 batches of 2
    job = jobs.start(TagOptions(inputs=[str(root / "a")], workers=0, batch_size=2), "gated")
    wait_for(lambda: jobs.status(job)["done"] >= 4)
    # the job is mid-run, waiting for its next batch: the model lock is free for an interactive caption
    result = manager.caption([str(root / "a" / "00.png")], model="shapes-demo")
    st = jobs.status(job)
    assert result[0].ok and st["state"] == "running" and st["done"] == 4
    models["gated"].gate.set()
    st = jobs.wait(job, timeout=60)
    assert st["state"] == "done" and st["written"] == 8


def test_cancel_running_and_queued_jobs(setup, demo_captioner):
    jobs, _, root, models = setup
    make_images(root / "a", 8)
    make_images(root / "b", 2)
    models["gated"] = GatedModel(demo_captioner, gate_at=3)  # holds the job after its first batch of 2
    first = jobs.start(TagOptions(inputs=[str(root / "a")], workers=0, batch_size=2), "gated")
    second = jobs.start(TagOptions(inputs=[str(root / "b")], workers=0), "shapes-demo")
    wait_for(lambda: jobs.status(first)["done"] >= 2)
    assert jobs.status(first)["state"] == "running" and jobs.status(second)["state"] == "queued"
    assert jobs.cancel(second)["state"] == "cancelled"  # a queued job is cancelled at once
    st = jobs.cancel(first)
    assert st["cancel_requested"] and st["state"] == "running"  # a running one stops after its current batch
    models["gated"].gate.set()
    st = jobs.wait(first, timeout=60)
    assert st["state"] == "cancelled" and (st["written"], st["done"], st["total"]) == (2, 2, 8)
    assert jobs.wait(second, timeout=5)["state"] == "cancelled"
    assert not list((root / "b").glob("*.txt"))  # the cancelled queued job never ran
    # a new job resumes where the cancelled one stopped
    again = jobs.wait(jobs.start(TagOptions(inputs=[str(root / "a")], workers=0, batch_size=4), "shapes-demo"), 60)
    assert (again["state"], again["written"], again["skipped"]) == ("done", 6, 2)


def test_a_failing_job_reports_its_error(setup):
    jobs, _, root, _ = setup
    make_images(root / "ds", 1)
    st = jobs.wait(jobs.start(TagOptions(inputs=[str(root / "ds")]), "not-a-model"), timeout=10)
    assert st["state"] == "failed" and "not-a-model" in st["error"]
    # the worker thread survives a failed job
    st = jobs.wait(jobs.start(TagOptions(inputs=[str(root / "ds")], workers=0), "shapes-demo"), timeout=30)
    assert st["state"] == "done" and st["written"] == 1


def test_http_routes_drive_the_real_job_manager(setup):
    """The API's /batch routes (written against this JobManager) with real TagOptions, end to end."""
    fastapi = pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lib_clipcap.app.api import API_PREFIX, mount_api

    jobs, manager, root, _ = setup
    make_images(root / "ds", 3)
    app = fastapi.FastAPI()
    mount_api(app, manager, job_manager=jobs, default_model="shapes-demo")
    client = TestClient(app)
    r = client.post(f"{API_PREFIX}/batch", json={"inputs": ["ds"], "prefix": "sks", "decoding": "greedy",
                                                  "max_new_tokens": 20, "workers": 0})
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    jobs.wait(job, timeout=60)
    st = client.get(f"{API_PREFIX}/batch/{job}").json()
    assert (st["state"], st["written"], st["total"]) == ("done", 3, 3)
    assert (root / "ds" / "00.txt").read_text().startswith("sks, ")
    assert client.delete(f"{API_PREFIX}/batch/{job}").json()["state"] == "done"  # cancelling a finished job
    r = client.post(f"{API_PREFIX}/batch", json={"inputs": [str(root / ".." / "elsewhere")]})
    assert r.status_code == 403 and "outside the allowed folders" in r.text
    r = client.post(f"{API_PREFIX}/batch", json={"inputs": ["ds"], "existing": "merge"})
    assert r.status_code == 422 and "existing='merge'" in r.text
