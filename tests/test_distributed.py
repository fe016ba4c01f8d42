"""The Ray engine (lib_clipcap.distributed) on a real local Ray cluster: a head node and a worker node, each started
as its own ``ray start`` process on this machine, tagging a few hundred shapes images with the bundled demo model.

Checked: the captions equal the single-machine run's, file for file; bad images fail alone with the same reasons;
a rerun skips what is done (journal) or what the Parquet manifest holds (manifest-only runs, object-storage style
``file://`` URLs); the CLI reports like the local engine; killing the worker node mid-run still completes the job
on the head, with no partial or temporary file. Without Ray installed, the library still imports and the engine
says how to install it.

One cluster serves the whole module (starting Ray costs ~25 s); every test that needs the worker node makes sure one
is running. The cluster is stopped by killing the processes it started (never ``ray stop``, which would kill every
Ray process of the user).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from lib_clipcap import shapes
from lib_clipcap.batch import TagOptions, run_tagging
from lib_clipcap.batch.journal import JOURNAL_NAME
from lib_clipcap.batch.errors import BatchInputError
from lib_clipcap.batch.lock import LOCK_NAME
from lib_clipcap.distributed import ModelSpec, RayNotInstalledError, RayOptions, require_ray
from lib_clipcap.options_table import OptionError

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 300
BAD = {"broken.png": b"this is not an image", "empty.jpg": b""}
# Small logical slices, so that all actors plus the decode tasks still fit on the head alone once the worker node is
# gone (Ray restarts the dead node's actor there). Each actor also reserves one SLOT of Ray's logical ``memory``
# resource: the head has two slots, the worker node one, which is how the tests decide where actors go (below). Both
# nodes have MARGIN more, less than a slot: Ray Data asks for some memory for every decode task too (its estimate of
# the task's output), and those tasks must never wait for an actor to end.
SLOT = 256 * 2**20
MARGIN = 64 * 2**20
PLACEMENT = dict(actors=2, cpus_per_actor=0.5, decode_cpus=0.5, batch_size=10, progress_bars=False,
                 memory_per_actor=SLOT)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: the actors need them more than this process
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """N_IMAGES shapes images in two sub-folders, plus two bad files."""
    folder = tmp_path_factory.mktemp("dataset")
    for i, scene in enumerate(shapes.make_scenes(5, N_IMAGES)):
        sub = folder / ("left" if i % 2 else "right")
        sub.mkdir(exist_ok=True)
        scene.render(64).save(sub / f"img{i:03d}.png")
    for name, data in BAD.items():
        (folder / name).write_bytes(data)
    return folder


def copy_of(dataset: Path, dest: Path) -> Path:
    shutil.copytree(dataset, dest)
    return dest


def captions(folder: Path) -> dict:
    """Caption files under ``folder``, by path relative to it."""
    return {p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*.txt"))}


def reasons(summary, folder: Path) -> dict:
    return {Path(f.path).name: f.reason.replace(str(folder), "<dir>") for f in summary.failures}


@pytest.fixture(scope="module")
def reference(dataset, demo_captioner, tmp_path_factory):
    """The single-machine run (run_tagging, greedy decoding) on a copy of the dataset."""
    folder = copy_of(dataset, tmp_path_factory.mktemp("ref") / "ds")
    summary = run_tagging(TagOptions(inputs=[str(folder)], workers=0, batch_size=16), demo_captioner)
    assert (summary.written, summary.failed) == (N_IMAGES, len(BAD))
    return {"captions": captions(folder), "reasons": reasons(summary, folder)}


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from devtools.local_cluster import LocalCluster

    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    c = LocalCluster(head_cpus=2, object_store_memory=200_000_000, head_memory=2 * SLOT + MARGIN, env=env)
    saved = {k: os.environ.get(k) for k in c.driver_env()}
    try:
        c.start()
        os.environ.update(c.driver_env())
        ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ensure_worker(cluster):
    """The cluster's worker node (started if there is none, e.g. after the kill test)."""
    import ray

    live = [w for w in cluster.workers if w.alive()]
    if not live:
        live = [cluster.add_worker(num_cpus=1, memory=SLOT + MARGIN)]
    cluster.wait_for_nodes(2)
    assert sum(1 for n in ray.nodes() if n.get("Alive")) == 2
    return live[0]


def head_node_id() -> str:
    import ray

    return next(n["NodeID"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n["Resources"])


@contextlib.contextmanager
def one_actor_on_each_node():
    """Hold one of the head's two actor slots while the body runs, so that Ray must place one captioning actor on the
    head and one on the worker node. Ray Data spreads actors only as best it can: which node has room when an actor is
    scheduled depends on the decode tasks running at that moment, and in one CI run both actors went to the head.
    Yields a function that gives the slot back early (then the head can take a restarted actor)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    class SlotHolder:  # defined here so that it travels by value (the test module is not importable on the nodes)
        def ready(self) -> bool:
            return True

    holder = ray.remote(num_cpus=0, memory=SLOT)(SlotHolder).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(head_node_id(), soft=False)).remote()
    assert ray.get(holder.ready.remote(), timeout=120)
    held = [holder]

    def release() -> None:
        while held:
            ray.kill(held.pop())

    try:
        yield release
    finally:
        release()


def ray_options(cluster, **kw) -> RayOptions:
    return RayOptions(address=cluster.address, **{**PLACEMENT, **kw})


def nodes_used(caplog) -> int:
    found = [int(m.group(1)) for r in caplog.records for m in [re.search(r"captioned on (\d+) node", r.getMessage())]
             if m]
    return found[-1] if found else 0


# ------------------------------------------------------------------------------------------ without a cluster
def test_library_imports_without_ray_and_the_engine_names_the_install_command(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # as if Ray were not installed\n"
        "import lib_clipcap, lib_clipcap.batch, lib_clipcap.batch.cli, lib_clipcap.distributed\n"
        "from lib_clipcap.distributed import RayOptions, ModelSpec\n"
        "from lib_clipcap.app.cli import main\n"
        f"sys.exit(main(['tag', {str(tmp_path)!r}, '--engine', 'ray', '--model', 'shapes-demo']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2, out.stderr
    assert 'pip install "ray[data]' in out.stderr and "--engine local" in out.stderr


def test_require_ray_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayNotInstalledError, match=r'pip install "ray\[data\]>=') as e:
        require_ray()
    assert isinstance(e.value, ImportError)


def test_options_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(OptionError, match="manifest_parquet"):
        RayOptions(sidecars=False)
    with pytest.raises(OptionError, match="private Ray"):
        RayOptions(address="auto", num_cpus=2)
    with pytest.raises(OptionError, match="actors"):
        RayOptions(actors=0)
    from lib_clipcap.distributed.engine import _placement

    class FakeRay:
        @staticmethod
        def cluster_resources():
            return {"CPU": 2.0}

    with pytest.raises(OptionError, match="decoding could never run"):
        _placement(FakeRay, RayOptions(actors=2), ModelSpec("shapes-demo"))
    assert _placement(FakeRay, RayOptions(), ModelSpec("shapes-demo"))["actors"] == 1

    class FakeGpuRay:
        @staticmethod
        def cluster_resources():
            return {"CPU": 32.0, "GPU": 8.0}

    place = _placement(FakeGpuRay, RayOptions(), ModelSpec("shapes-demo"))
    assert (place["actors"], place["gpus_per_actor"], place["device"]) == (8, 1.0, "cuda")
    place = _placement(FakeGpuRay, RayOptions(), ModelSpec("shapes-demo", device="cpu"))
    assert (place["gpus_per_actor"], place["device"]) == (0.0, "cpu")


def test_local_engine_refuses_ray_only_options(tmp_path, capsys):
    from lib_clipcap.app.cli import main

    assert main(["tag", str(tmp_path), "--address", "auto", "--manifest-parquet", str(tmp_path / "pq")]) == 2
    assert "--address, --manifest-parquet only apply to --engine ray" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ on the cluster
def test_object_storage_urls_are_listed_planned_and_decoded(dataset, demo_captioner, tmp_path):
    """``file://`` goes through pyarrow's filesystem layer exactly as ``s3://`` or ``gs://`` would."""
    from lib_clipcap.batch.discover import discover
    from lib_clipcap.batch.journal import Journal
    from lib_clipcap.batch.plan import plan_tasks
    from lib_clipcap.distributed.engine import _check_layout, decode_batch
    from lib_clipcap.distributed.sources import RemoteItem, make_lister

    url = "file://" + str(dataset)
    options = TagOptions(inputs=[url], include=["left/*", "*.jpg"], output_dir=str(tmp_path / "out"))
    found = discover(options, remote=make_lister(options))
    assert len(found.items) == N_IMAGES // 2 + 1 and all(isinstance(i, RemoteItem) for i in found.items)
    first = found.items[0]
    assert first.path == f"{url}/empty.jpg" and first.size == 0 and first.mtime_ns > 0
    item = next(i for i in found.items if i.path.endswith("left/img001.png"))
    assert item.rel.as_posix() == "left/img001.png"
    assert item.caption_path(".txt", tmp_path / "out") == tmp_path / "out" / "left" / "img001.txt"
    journal = Journal(tmp_path / "out", "sig").load()
    tasks, settled = plan_tasks(found.items, options, {tmp_path / "out": journal}, None)
    assert len(tasks) == len(found.items) and settled == []
    # remote images get no sidecar beside them: an output folder (or a manifest-only run) is required
    with pytest.raises(OptionError, match="--output-dir"):
        _check_layout(TagOptions(inputs=[url]), RayOptions())
    listed = tmp_path / "list.txt"
    listed.write_text(f"{url}/left/img001.png\n", encoding="utf-8")
    from lib_clipcap.distributed import run_tagging_ray

    with pytest.raises(OptionError, match="--output-dir"):  # URLs from a list file: checked before any folder is made
        run_tagging_ray(TagOptions(list_file=str(listed)), "shapes-demo", RayOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.txt"]
    with pytest.raises(BatchInputError, match="input not found"):
        discover(TagOptions(inputs=[url + "/nope"]), remote=make_lister(options))
    # decoding in the tasks: the same pixels as the local loader, per-image errors for bad and missing objects
    paths = [item.path, f"{url}/empty.jpg", f"{url}/missing.png", str(dataset / "broken.png")]
    shape = tuple(demo_captioner.clip.preprocess(Image.new("RGB", (8, 8))).shape)
    out = decode_batch({"pos": list(range(4)), "path": paths}, preprocess=demo_captioner.clip.preprocess,
                       shape=shape, max_pixels=None)
    local = demo_captioner.clip.preprocess(Image.open(dataset / "left" / "img001.png").convert("RGB")).numpy()
    assert (out["pixels"][0] == local).all() and out["error"][0] == ""
    assert out["error"][1] == f"Cannot load image {url}/empty.jpg: no data (0 bytes)"
    assert "missing.png" in out["error"][2] and "not an image" in out["error"][3]


@pytest.mark.slow
@pytest.mark.ray
def test_ray_run_equals_single_machine_run_and_resumes(cluster, dataset, reference, tmp_path, caplog):
    ensure_worker(cluster)
    folder = copy_of(dataset, tmp_path / "ds")
    caplog.set_level(logging.INFO, logger="lib_clipcap.distributed")
    # Ray Data logs its execution plan here; "ray.data" does not propagate to the root logger: listen directly
    ray_data_log = logging.getLogger("ray.data._internal.execution.streaming_executor")
    ray_data_log.addHandler(caplog.handler)
    from lib_clipcap.distributed import run_tagging_ray

    seen = []
    try:
        with one_actor_on_each_node():
            s = run_tagging_ray(TagOptions(inputs=[str(folder)], manifest_jsonl=str(tmp_path / "m.jsonl")),
                                together_spec(tmp_path), ray_options(cluster, manifest_parquet=str(tmp_path / "pq")),
                                progress=lambda done, total, path: seen.append((done, total)))
    finally:
        ray_data_log.removeHandler(caplog.handler)
    assert (s.total, s.written, s.skipped, s.failed) == (N_IMAGES + len(BAD), N_IMAGES, 0, len(BAD))
    assert s.model == "shapes-demo" and s.images_per_s > 0 and not s.stopped
    assert s.line() == (f"written {N_IMAGES}, already done (resume) 0, had a caption (policy) 0, "
                        f"failed {len(BAD)}")
    assert [d for d, _ in seen] == list(range(1, N_IMAGES + len(BAD) + 1))
    # the same captions as the single-machine run, file for file; the same failures with the same reasons
    assert captions(folder) == reference["captions"]
    assert reasons(s, folder) == reference["reasons"]
    assert nodes_used(caplog) == 2  # both nodes captioned
    plan = [r.getMessage() for r in caplog.records if "Execution plan" in r.getMessage()]
    # decoding stays in CPU tasks, apart from the captioning actors (not fused into them)
    assert "TaskPoolMapOperator[MapBatches(decode_batch)] -> ActorPoolMapOperator[MapBatches(CaptionActor)]" \
        in plan[-1]
    # manifests: JSONL as the local engine writes it, Parquet with the same rows
    rows = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["status"] for r in rows).count("written") == N_IMAGES
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "pq").to_pylist()
    assert {r["path"]: r["caption"] for r in table if r["status"] == "written"} == \
        {r["path"]: r["caption"] for r in rows if r["status"] == "written"}
    assert not list(folder.rglob("*.tmp")) and not (folder / LOCK_NAME).exists()
    # resume: a rerun finds every caption in the journal and touches nothing (the bad files, which would be tried
    # again, are left out so that no pipeline needs to start)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.txt")}
    s2 = run_tagging_ray(TagOptions(inputs=[str(folder)], exclude=list(BAD)), "shapes-demo", ray_options(cluster))
    assert (s2.written, s2.skipped, s2.failed) == (0, N_IMAGES, 0)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.txt")} == before


@pytest.mark.slow
@pytest.mark.ray
def test_a_ray_run_is_recorded_and_undone_like_a_local_one(cluster, dataset, tmp_path):
    """Issue 20: --engine ray writes through the same writer, so its runs are recorded, own text replaced on a
    re-run, and undo restores byte-identical files."""
    ensure_worker(cluster)
    folder = copy_of(dataset, tmp_path / "ds")
    hand = next(p for p in sorted(folder.rglob("*.png")) if p.name not in BAD).with_suffix(".txt")
    hand.write_bytes(b"hand written, sks")
    before = captions(folder)
    from lib_clipcap.batch.runs import list_runs, undo_run
    from lib_clipcap.distributed import run_tagging_ray

    opts = dict(inputs=[str(folder)], existing="append", triggers=["sks"])
    with one_actor_on_each_node():
        s = run_tagging_ray(TagOptions(**opts), "shapes-demo", ray_options(cluster))
        assert s.written == N_IMAGES and s.run_ids
        first = hand.read_bytes()
        assert first.startswith(b"sks, hand written, ") and first.count(b"sks") == 1
        run_tagging_ray(TagOptions(**opts, prefix="x"), "shapes-demo", ray_options(cluster))
    assert hand.read_bytes() == first.replace(b"hand written, ", b"hand written, x, ")  # replaced, not stacked
    assert [r["engine"] for r in list_runs(folder)] == ["ray", "ray"]
    assert undo_run(folder).complete and undo_run(folder).complete
    assert captions(folder) == before


@pytest.mark.slow
@pytest.mark.ray
def test_manifest_only_url_run_stops_and_the_cli_resumes_it(cluster, dataset, reference, tmp_path, capsys):
    """Object-storage style: ``file://`` URLs, no caption files, the Parquet manifest as the only output and the
    resume record; the second run is the CLI, which reports like the local engine."""
    from lib_clipcap.app.cli import main
    from lib_clipcap.distributed import run_tagging_ray

    url = "file://" + str(dataset)
    pq_dir = tmp_path / "pq"
    opts = RayOptions(address=cluster.address, sidecars=False, manifest_parquet=str(pq_dir), parquet_flush_s=0,
                      **{**PLACEMENT, "actors": 1})
    batches = []

    def stop_after_three() -> bool:
        batches.append(1)
        return len(batches) >= 3

    first = run_tagging_ray(TagOptions(inputs=[url], prefix="sks"), "shapes-demo", opts, should_stop=stop_after_three)
    assert first.stopped and 0 < first.written < N_IMAGES and first.skipped == 0
    code = main(["tag", url, "--engine", "ray", "--address", cluster.address, "--model", "shapes-demo", "--device",
                 "cpu", "--prefix", "sks", "--no-sidecars", "--manifest-parquet", str(pq_dir), "--actors", "1",
                 "--cpus-per-actor", "0.5", "--decode-cpus", "0.5", "--batch-size", "10", "--no-ray-progress"])
    out, err = capsys.readouterr()
    assert code == 1, err  # 1: some files failed (the bad ones), as with the local engine
    rest = N_IMAGES - first.written
    # the summary line ends the output (Ray may print notes of its own before it, e.g. about the first run's actors)
    assert re.fullmatch(rf"written {rest}, already done \(resume\) {first.written}, had a caption \(policy\) 0, "
                        rf"failed {len(BAD)} in [0-9.]+ s "
                        rf"\([0-9.]+ images/s\)", out.splitlines()[-1]), out
    assert f"failed: {url}/empty.jpg:" in err
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(pq_dir).to_pylist() if r["status"] == "written"]
    got = {r["path"][len(url) + 1:].rsplit(".", 1)[0]: r for r in rows}
    assert len(rows) == len(got) == N_IMAGES  # every image captioned exactly once over the two runs
    assert {k: r["caption"] for k, r in got.items()} == {k[:-4]: v for k, v in reference["captions"].items()}
    assert all(r["text"] == f"sks, {r['caption']}" and r["size"] > 0 and r["mtime_ns"] > 0 for r in rows)
    assert list(dataset.rglob("*.txt")) == [] and [p.name for p in pq_dir.iterdir() if p.suffix != ".parquet"] == []


@dataclasses.dataclass(frozen=True)
class TogetherSpec(ModelSpec):
    """The demo model, whose actors all start captioning together (a barrier of files in ``barrier``), so that every
    node works on the job however long each actor took to start (on two loaded cores, the worker node's actor can
    take longer to load than the head's needs for the whole job), optionally slowed to ``delay_s`` per batch.
    Captions are the demo model's own."""

    barrier: str = ""
    actors: int = 2
    delay_s: float = 0.0

    def load(self, **kw):
        model = super().load(**kw)
        original = model.caption_pixels
        started = []

        def together(*a, **k):
            if not started:  # first batch of this actor (the driver's probe never captions)
                started.append(1)
                Path(self.barrier, str(os.getpid())).touch()
                deadline = time.monotonic() + 180
                while len(os.listdir(self.barrier)) < self.actors and time.monotonic() < deadline:
                    time.sleep(0.05)
            time.sleep(self.delay_s)
            return original(*a, **k)

        model.caption_pixels = together
        return model


def together_spec(tmp_path: Path, delay_s: float = 0.0) -> TogetherSpec:
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the spec travels by value to the actors
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    return TogetherSpec(model="shapes-demo", barrier=str(barrier), actors=PLACEMENT["actors"], delay_s=delay_s)


@pytest.mark.slow
@pytest.mark.ray
def test_killing_the_worker_node_mid_run_completes_on_the_head(cluster, dataset, reference, tmp_path, caplog):

    from lib_clipcap.distributed import run_tagging_ray

    worker = ensure_worker(cluster)
    folder = copy_of(dataset, tmp_path / "ds")
    spec = together_spec(tmp_path, delay_s=0.5)
    caplog.set_level(logging.INFO, logger="lib_clipcap.distributed")
    result: dict = {}
    head = head_node_id()
    by_node: dict = {}

    def count(node: str, n: int) -> None:
        by_node[node] = by_node.get(node, 0) + n

    def run() -> None:
        try:
            result["summary"] = run_tagging_ray(TagOptions(inputs=[str(folder)]), spec, ray_options(cluster),
                                                on_batch=count)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            result["error"] = e

    with one_actor_on_each_node() as release_head_slot:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 240
        # kill once the worker node has captioned batches of its own and files are being written
        while time.monotonic() < deadline and thread.is_alive():
            on_worker = sum(n for node, n in dict(by_node).items() if node != head)
            if on_worker >= 10 and len(list(folder.rglob("*.txt"))) >= 40:
                break
            time.sleep(0.1)
        done_before = len(list(folder.rglob("*.txt")))
        assert thread.is_alive() and 40 <= done_before < N_IMAGES, (done_before, by_node, result)
        assert any("CaptionActor" in t for t in worker.process_titles())
        release_head_slot()  # room on the head for the actor Ray restarts there
        cluster.kill(worker)  # SIGKILL every process of the node: raylet, object store, its actor and tasks
    thread.join(timeout=300)
    assert not thread.is_alive(), "the run did not finish after the worker node died"
    assert "error" not in result, result.get("error")
    s = result["summary"]
    assert (s.written, s.failed, s.stopped) == (N_IMAGES, len(BAD), False)
    assert captions(folder) == reference["captions"]  # every caption complete and equal to the clean run's
    assert reasons(s, folder) == reference["reasons"]
    assert not list(folder.rglob("*.tmp")) and not list(folder.rglob(".*.tmp")) and not (folder / LOCK_NAME).exists()
    assert nodes_used(caplog) == 2  # the dead node had captioned batches before it died
    assert sum(by_node.values()) == N_IMAGES + len(BAD) and by_node.get(head, 0) > N_IMAGES // 2
    records = (folder / JOURNAL_NAME).read_text().splitlines()[1:]
    assert len(records) == N_IMAGES
