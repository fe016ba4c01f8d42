"""``--engine ray`` with tags (issue 22): the captioning actors tag from the same CLIP encoding as they caption, the
driver writes through the local writer, so the sidecars (caption file and ``.tags`` file), the JSONL manifest's tags
with their scores and the Parquet manifest equal the single-machine run's. On a real local Ray cluster (one head
node, its own ``ray start`` process), tagging a few shapes images with the bundled demo model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from _batch_data import shapes_pngs
from lib_clipcap.batch import TagOptions, run_tagging
from lib_clipcap.batch.writer import read_manifest

ROOT = Path(__file__).resolve().parents[1]
N = 6

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def cluster(models_dir):
    ray = pytest.importorskip("ray")
    from devtools.local_cluster import LocalCluster

    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CLIPCAP_MODELS_DIR": str(models_dir)}
    c = LocalCluster(head_cpus=2, object_store_memory=200_000_000, env=env)
    saved = {k: os.environ.get(k) for k in [*c.driver_env(), "CLIPCAP_MODELS_DIR"]}
    try:
        c.start()
        os.environ.update({**c.driver_env(), "CLIPCAP_MODELS_DIR": str(models_dir)})
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


def _ray_options(cluster, **kw):
    from lib_clipcap.distributed import RayOptions

    return RayOptions(address=cluster.address, actors=1, cpus_per_actor=1, decode_cpus=0.5, batch_size=4,
                      progress_bars=False, **kw)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".txt", ".tags")}


def test_a_ray_run_with_tags_equals_the_local_run(cluster, demo_captioner, tmp_path):
    import torch

    from lib_clipcap.distributed import run_tagging_ray
    from lib_clipcap.distributed.manifest import read_manifest as read_parquet

    imgs = shapes_pngs(tmp_path / "local", N, seed=3, prefix="img")
    imgs[0].with_suffix(".tags").write_bytes(b"hand tag")
    shutil.copytree(tmp_path / "local", tmp_path / "ray")
    kw = dict(content="caption+tags", tags_file=True, tag_vocabulary=["shapes"], triggers=["sks"],
              existing="append", batch_size=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_tagging(TagOptions(inputs=[str(tmp_path / "local")], workers=0,
                                       manifest_jsonl=str(tmp_path / "local.jsonl"), **kw), demo_captioner)
    finally:
        torch.set_num_threads(threads)
    assert (local.written, local.failed) == (N, 0), local.failures
    s = run_tagging_ray(TagOptions(inputs=[str(tmp_path / "ray")], manifest_jsonl=str(tmp_path / "ray.jsonl"), **kw),
                        "shapes-demo", _ray_options(cluster, manifest_parquet=str(tmp_path / "parquet")))
    assert (s.written, s.failed) == (N, 0), s.failures
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")  # sentence in .txt, tags in .tags, byte for byte
    assert _files(tmp_path / "ray")["img00.tags"].startswith(b"sks, hand tag, ")
    by_name = {Path(r["path"]).name: r for r in read_manifest(tmp_path / "local.jsonl")}
    for r in read_manifest(tmp_path / "ray.jsonl"):
        want = by_name[Path(r["path"]).name]
        assert [t for t, _ in r["tags"]] == [t for t, _ in want["tags"]] and r["tags"]
        assert [x for _, x in r["tags"]] == pytest.approx([x for _, x in want["tags"]], abs=1e-5)
        assert r["tags_output"] and r["tags_output"].endswith(".tags")
    rows = read_parquet(tmp_path / "parquet").to_pylist()
    assert len(rows) == N and all(r["tags"] and r["tags_output"] for r in rows)
    # a rerun resumes both files of every image
    again = run_tagging_ray(TagOptions(inputs=[str(tmp_path / "ray")], **kw), "shapes-demo", _ray_options(cluster))
    assert (again.resumed, again.written) == (N, 0)


def test_a_manifest_only_ray_run_carries_the_tags(cluster, tmp_path):
    from lib_clipcap.distributed import run_tagging_ray
    from lib_clipcap.distributed.manifest import read_manifest as read_parquet

    shapes_pngs(tmp_path / "set", N, seed=3, prefix="img")
    options = TagOptions(inputs=[str(tmp_path / "set")], content="tags", tag_vocabulary=["shapes"])
    s = run_tagging_ray(options, "shapes-demo", _ray_options(cluster, manifest_parquet=str(tmp_path / "pq"),
                                                             sidecars=False))
    assert (s.written, s.failed) == (N, 0), s.failures
    assert not _files(tmp_path / "set")  # no sidecar at all
    rows = {Path(r["path"]).name: r for r in read_parquet(tmp_path / "pq").to_pylist()}
    assert rows["img01.png"]["caption"] == "large, yellow, black background, triangle"
    assert [t["tag"] for t in rows["img01.png"]["tags"]] == ["large", "yellow", "black background", "triangle"]
