"""How a Ray run is spread over the cluster (:class:`RayOptions`); what it captions and writes stays in
:class:`~lib_clipcap.batch.TagOptions`. No Ray import here: the CLI builds these before Ray is loaded."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..options_table import OptionError


def _positive(name: str, value: Any, *, integer: bool = False, zero: bool = False, nullable: bool = True) -> Any:
    if value is None and nullable:
        return None
    ok_type = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or value < 0 or (value == 0 and not zero):
        kind = "an integer" if integer else "a number"
        raise OptionError(name, value, f"must be {kind} {'>= 0' if zero else '> 0'}")
    return value


@dataclass
class RayOptions:
    """Cluster-side settings of :func:`~lib_clipcap.distributed.run_tagging_ray`.

    Connection:
        address: ``"auto"`` (the cluster this machine belongs to), ``"HOST:PORT"`` (a head's GCS address) or
            ``"ray://HOST:10001"`` (Ray Client); ``None``: start a private Ray on this machine for the run (every GPU
            and core of it) and stop it afterwards. An already initialised Ray (``ray.init`` by the caller) is used
            as it is.
        num_cpus, num_gpus, object_store_memory: Only when ``address`` is ``None``: the private Ray's resources
            (default: what the machine has).

    Placement:
        actors: Captioning actors, each with its own copy of the model (default: one per GPU of the cluster, else
            half the cluster's CPUs, at least 1).
        gpus_per_actor: GPUs per actor (default: 1 when the cluster has GPUs and the model's device is not ``cpu``,
            else 0). Fractions share a GPU between actors.
        cpus_per_actor: CPUs reserved per actor (default 1; a CPU actor uses that many threads).
        memory_per_actor: Bytes of host memory reserved per actor (default: none reserved). Reserving about what one
            loaded model takes (Ray Data logs its estimate) keeps Ray from packing more actors on a node than fit.
            Leave part of each node's ``memory`` resource unreserved: Ray Data reserves some for every decode task
            too, and those tasks wait (the run stalls) while actors hold all of it.
        decode_cpus: CPUs per decode/preprocess task (default 1).
        batch_size: Images per actor call (default: ``TagOptions.batch_size``, else 16 on CPU, 64 on GPU).

    Outputs (besides the sidecar files and the JSONL/CSV manifests of ``TagOptions``):
        manifest_parquet: A folder receiving the run's rows as Parquet part files (each written atomically); it can
            be read back with ``pyarrow.parquet.read_table(folder)`` or ``ray.data.read_parquet(folder)``.
        sidecars: Write caption files (default). ``False``: only the manifests (needs ``manifest_parquet``, which
            then also serves as the resume record: images it holds as written with the same settings are skipped).
        parquet_flush_s, parquet_rows_per_part: A Parquet part is written when this many seconds passed or rows
            gathered since the last one, and at the end (a crash loses at most that much; it is re-captioned on
            resume).

    Display:
        progress_bars: Ray Data's own progress bars (operators, tasks, actors) besides our per-file counts.
    """

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_memory: int | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    memory_per_actor: int | None = None
    decode_cpus: float = 1.0
    batch_size: int | None = None
    manifest_parquet: str | None = None
    sidecars: bool = True
    parquet_flush_s: float = 30.0
    parquet_rows_per_part: int = 100_000
    progress_bars: bool = True

    def __post_init__(self) -> None:
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise OptionError("address", self.address, "must be 'auto', HOST:PORT or ray://HOST:PORT")
        self.num_cpus = _positive("num_cpus", self.num_cpus, integer=True)
        self.num_gpus = _positive("num_gpus", self.num_gpus, integer=True, zero=True)
        self.object_store_memory = _positive("object_store_memory", self.object_store_memory, integer=True)
        if self.address is not None and (self.num_cpus or self.num_gpus is not None or self.object_store_memory):
            raise OptionError("num_cpus", self.num_cpus, "num_cpus, num_gpus and object_store_memory only apply to "
                                                         "a private Ray (no address); a cluster has its own")
        self.actors = _positive("actors", self.actors, integer=True)
        self.gpus_per_actor = _positive("gpus_per_actor", self.gpus_per_actor, zero=True)
        self.cpus_per_actor = _positive("cpus_per_actor", self.cpus_per_actor, zero=True, nullable=False)
        self.memory_per_actor = _positive("memory_per_actor", self.memory_per_actor, integer=True)
        self.decode_cpus = _positive("decode_cpus", self.decode_cpus, zero=True, nullable=False)
        self.batch_size = _positive("batch_size", self.batch_size, integer=True)
        self.parquet_flush_s = _positive("parquet_flush_s", self.parquet_flush_s, zero=True, nullable=False)
        self.parquet_rows_per_part = _positive("parquet_rows_per_part", self.parquet_rows_per_part, integer=True,
                                               nullable=False)
        if self.manifest_parquet is not None:
            try:
                self.manifest_parquet = os.fspath(self.manifest_parquet) or None
            except TypeError:
                raise OptionError("manifest_parquet", self.manifest_parquet, "must be a folder path") from None
        for name in ("sidecars", "progress_bars"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(name, getattr(self, name), "must be true or false")
        if not self.sidecars and not self.manifest_parquet:
            raise OptionError("sidecars", self.sidecars, "without caption files the captions must go somewhere: "
                                                         "give manifest_parquet (--manifest-parquet DIR)")
