"""Scale-out batch tagging on Ray Data: many GPUs, many machines, large datasets.

The same run as :func:`lib_clipcap.batch.run_tagging` -- same discovery, plan, existing-caption policies, journal,
lock, atomic writes, manifests and :class:`~lib_clipcap.batch.TagSummary` -- with the captioning done by a Ray Data
pipeline instead of this process::

    image paths (folders, list file, s3:// gs:// file:// ... URLs)  -> Ray Dataset
      -> map_batches(decode + preprocess)            CPU tasks, anywhere in the cluster
      -> map_batches(CaptionActor, ActorPoolStrategy) one model per actor (num_gpus=1: one per GPU)
      -> this process: post-process, journal, atomic sidecar writes, JSONL/CSV/Parquet manifests

Ray is an optional dependency (``pip install "ray[data]"``, or the ``ray`` extra): this package imports without it,
and every entry point that needs it raises :class:`RayNotInstalledError` naming the install command. ::

    from lib_clipcap.batch import TagOptions
    from lib_clipcap.distributed import RayOptions, run_tagging_ray

    summary = run_tagging_ray(TagOptions(inputs=["/data/set"]), "flickr8k", RayOptions(address="auto"))
    print(summary.line())

See docs/distributed.md for multi-GPU machines, clusters, object storage, resuming and benchmark figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .options import RayOptions
from .ray_import import INSTALL_HINT, RAY_REQUIREMENT, RayNotInstalledError, require_ray  # noqa: F401
from .spec import ModelSpec

__all__ = ["INSTALL_HINT", "ModelSpec", "RayNotInstalledError", "RayOptions", "require_ray", "run_tagging_ray"]


def __getattr__(name: str) -> Any:
    if name == "run_tagging_ray":
        from .engine import run_tagging_ray

        return run_tagging_ray
    raise AttributeError(f"module 'lib_clipcap.distributed' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from .engine import run_tagging_ray
