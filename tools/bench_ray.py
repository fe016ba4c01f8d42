"""Ray engine benchmark: ``tag --engine ray`` throughput with 1, 2, ... captioning actors, same run, same images.

Each configuration tags the same folder end to end (files in, caption files written by the driver), ``--repeats``
times; medians are reported. Two rates per run:

* **end to end**: images / wall time of the whole ``run_tagging_ray`` call (model probe, pipeline start, actors
  loading their model, captioning, writing);
* **steady state**: images that came back after the first quarter / the time they took -- the rate a long run
  converges to, without the fixed start-up cost (model probe, actors importing torch and loading the model: seconds
  on an idle machine, tens of seconds on a loaded 2-core one). Meaningful when the model, not the driver's writing,
  is the bottleneck: use ``--real-size`` for scaling figures.

Models: the bundled ``shapes-demo`` (default; tiny, so the figures mostly show the engine's own overhead), or
``--real-size``: open_clip ViT-B-32 (or ``--clip ViT-L-14``) + ClipCap MLP prefix 10 + GPT-2 small with random
weights (the compute of the published models), every caption exactly ``--tokens`` tokens.

Cluster: by default a private cluster on this machine (a head node as its own process, ``--num-cpus`` logical CPUs,
stopped afterwards); ``--address HOST:PORT`` (or ``auto``) uses a running cluster instead (every node needs this
repository and its virtualenv, and the images must be on a path all nodes see).

    python tools/bench_ray.py                                      # CPU actors 1 and 2, shapes-demo
    python tools/bench_ray.py --real-size --images 64 --repeats 1  # real-size compute, CPU
    # one machine with 8 GPUs:
    python tools/bench_ray.py --real-size --clip ViT-L-14 --dtype fp16 --gpus-per-actor 1 --actors 1 2 4 8 \\
        --images 8192 --batch-size 128 --num-cpus 32
    # a running multi-node cluster (images on shared storage):
    python tools/bench_ray.py --address auto --gpus-per-actor 1 --actors 4 8 16 --real-size --dtype fp16 \\
        --work-dir /shared/bench

Prints a Markdown table and writes JSON to artifacts/bench_ray.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from lib_clipcap.distributed.spec import ModelSpec  # noqa: E402


@dataclasses.dataclass(frozen=True)
class RandomSpec(ModelSpec):
    """Real-size ClipCap with random weights (see tools/bench_batch.py); travels to the actors by value."""

    clip_arch: str = "ViT-B-32"

    def load(self, *, device: str | None = None, dtype: str | None = None):
        from bench_batch import build_captioner  # tools/ is on the nodes' PYTHONPATH

        return build_captioner(self.clip_arch, device or self.device or "cpu", dtype or self.dtype or "fp32")


def make_shapes(folder: Path, n: int, size: int) -> None:
    from lib_clipcap import shapes

    folder.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(shapes.make_scenes(3, n)):
        scene.render(size).save(folder / f"shape_{i:05d}.png")


def hardware(cluster_resources: dict) -> str:
    import torch

    gpus = int(cluster_resources.get("GPU", 0))
    gpu = ""
    if gpus and torch.cuda.is_available():
        gpu = f"{gpus} x {torch.cuda.get_device_name(0)}, "
    return (f"{gpu}{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, cluster "
            f"{cluster_resources.get('CPU', 0):g} logical CPUs, torch {torch.__version__}").replace("  ", " ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="actor counts to compare")
    ap.add_argument("--images", type=int, help="images per run (default: 600 shapes, 48 real-size)")
    ap.add_argument("--size", type=int, help="image side (default: 64 shapes, 512 real-size JPEGs)")
    ap.add_argument("--real-size", action="store_true", help="random-weight ViT + GPT-2 small instead of shapes-demo")
    ap.add_argument("--clip", default="ViT-B-32", help="--real-size: open_clip architecture")
    ap.add_argument("--tokens", type=int, default=20, help="--real-size: caption length in tokens")
    ap.add_argument("--device", help="actors' device (default: cuda with --gpus-per-actor, else cpu)")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--cpus-per-actor", type=float, default=0.5,
                    help="logical CPUs per actor (0.5 default: two 1-thread actors and decoding fit on 2 cores)")
    ap.add_argument("--decode-cpus", type=float, default=0.5)
    ap.add_argument("--gpus-per-actor", type=float, default=0.0)
    ap.add_argument("--address", help="a running cluster (default: start one on this machine)")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="logical CPUs of the private cluster")
    ap.add_argument("--num-gpus", type=int, default=0, help="GPUs of the private cluster")
    ap.add_argument("--object-store-memory", type=int, default=500_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work-dir", type=Path, help="where the images go (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench_ray.json")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # run the clean-up (cluster processes) on SIGTERM too

    import ray

    from lib_clipcap.batch import TagOptions
    from lib_clipcap.distributed import RayOptions, run_tagging_ray
    from devtools.local_cluster import LocalCluster

    n = args.images or (48 if args.real_size else 600)
    size = args.size or (512 if args.real_size else 64)
    work = Path(tempfile.mkdtemp(prefix="clipcap-bench-ray-", dir=args.work_dir))
    cluster = None
    try:
        folder = work / "images"
        t = time.perf_counter()
        if args.real_size:
            from bench_batch import make_jpegs

            make_jpegs(folder, n, size)
        else:
            make_shapes(folder, n, size)
        print(f"generated {n} {size}x{size} images in {time.perf_counter() - t:.1f} s", flush=True)
        device = args.device or ("cuda" if args.gpus_per_actor else "cpu")
        if args.real_size:
            spec: ModelSpec = RandomSpec(device=device, dtype=args.dtype, clip_arch=args.clip)
            decode = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens}
        else:
            spec = ModelSpec(model="shapes-demo", device=device, dtype=args.dtype)
            decode = {}
        address = args.address
        if address is None:
            env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tools"), os.environ.get("PYTHONPATH", "")]),
                   "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
            cluster = LocalCluster(head_cpus=args.num_cpus, head_gpus=args.num_gpus,
                                   object_store_memory=args.object_store_memory, env=env)
            cluster.start()
            os.environ.update(cluster.driver_env())
            address = cluster.address
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # RandomSpec travels by value
        resources = ray.cluster_resources()
        print(f"cluster: {resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU", flush=True)

        runs: dict = {a: [] for a in args.actors}
        for r in range(args.repeats):
            for actors in args.actors:
                marks: list = []
                options = TagOptions(inputs=[str(folder)], existing="overwrite", resume=False,
                                     batch_size=args.batch_size, **decode)
                ray_opts = RayOptions(address=address, actors=actors, cpus_per_actor=args.cpus_per_actor,
                                      decode_cpus=args.decode_cpus, gpus_per_actor=args.gpus_per_actor,
                                      batch_size=args.batch_size, progress_bars=False)
                t0 = time.perf_counter()
                s = run_tagging_ray(options, spec, ray_opts,
                                    progress=lambda done, total, path: marks.append((time.perf_counter(), done)))
                wall = time.perf_counter() - t0
                assert s.written == n and s.failed == 0, (s.line(), s.failures[:3])
                first_t = marks[0][0]
                # steady state: from the first arrival with a quarter of the images done, to the last
                tq, dq = next((tm, d) for tm, d in marks if d >= n / 4)
                steady = (n - dq) / (marks[-1][0] - tq) if marks[-1][0] > tq else float("nan")
                runs[actors].append({"wall_s": wall, "end_to_end": n / wall, "steady": steady,
                                     "first_s": first_t - t0})
                print(f"repeat {r + 1}, {actors} actor(s): {n / wall:.1f} img/s end to end, {steady:.1f} img/s "
                      f"steady, first caption after {first_t - t0:.1f} s", flush=True)
        hw = hardware(resources)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    med = {a: {k: statistics.median(x[k] for x in v) for k in ("end_to_end", "steady", "first_s", "wall_s")}
           for a, v in runs.items()}
    base = med[args.actors[0]]
    model = (f"{args.clip} + MLP prefix 10 + GPT-2 small (random weights), {args.tokens}-token captions"
             if args.real_size else "shapes-demo (bundled tiny model)")
    result = {"hardware": hw, "model": model, "device": device, "dtype": args.dtype, "images": n, "image_size": size,
              "batch_size": args.batch_size, "cpus_per_actor": args.cpus_per_actor, "decode_cpus": args.decode_cpus,
              "gpus_per_actor": args.gpus_per_actor, "repeats": args.repeats, "runs": runs, "medians": med}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\n{hw}; {model}; {n} images {size}x{size}, batch {args.batch_size}, {device}; medians of "
          f"{args.repeats}\n")
    print("| actors | end to end, images/s | steady state, images/s | first caption after | steady speed-up |")
    print("|---|---|---|---|---|")
    for a in args.actors:
        m = med[a]
        print(f"| {a} | {m['end_to_end']:.1f} | {m['steady']:.1f} | {m['first_s']:.1f} s | "
              f"{m['steady'] / base['steady']:.2f}x |")


if __name__ == "__main__":
    main()
