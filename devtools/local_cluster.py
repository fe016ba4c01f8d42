"""A real multi-node Ray cluster on one machine, for tests, benchmarks and trying the Ray engine out.

Every node is its own ``ray start --block`` process (a head, then any number of worker nodes) in a session of its
own, started for 127.0.0.1 (Ray advertises the machine's address), exactly as ``ray start`` runs on separate
machines; only the ports differ. A node is stopped by signalling *its* processes: the ``ray start`` process and all
its descendants (raylet, object store, agents, and the Ray workers, which run in sessions of their own). So killing a
worker node mid-run is a real node failure, and shutting the cluster down never touches Ray processes that someone
else started (unlike ``ray stop``, which kills every Ray process of the user)::

    from devtools.local_cluster import LocalCluster

    with LocalCluster(head_cpus=2) as cluster:     # head node
        worker = cluster.add_worker(num_cpus=1)     # a second node
        run_tagging_ray(options, "shapes-demo", RayOptions(address=cluster.address))
        cluster.kill(worker)                        # SIGKILL the whole node

Keep the temporary folder short (``/tmp/rayXXXX``, the default): Ray puts unix sockets in it and socket paths are
limited to ~107 bytes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def _ray_executable() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


@dataclass
class Node:
    """One node: its ``ray start --block`` process (leader of the node's process group) and log file."""

    name: str
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def pids(self) -> list[int]:
        """Every live process of this node: the ``ray start`` process and all its descendants.

        Ray starts its worker processes in sessions of their own, so the node's process group alone would miss them.
        """
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, ...
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
        out, todo = [], [self.pid] if self.alive() else []
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, ()))
        return out

    def process_titles(self) -> list[str]:
        """Command lines of the node's processes (Ray names actor processes ``ray::<class>``)."""
        titles = []
        for pid in self.pids():
            try:
                titles.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
        return titles


class LocalCluster:
    """A head node plus worker nodes, each a separate ``ray start --block`` process group on 127.0.0.1.

    Args:
        head_cpus: Logical CPUs of the head node.
        head_gpus: GPUs of the head node (0: none, even on a GPU machine).
        object_store_memory: Object store size per node, bytes (small: the machine is shared).
        head_memory: The head's logical ``memory`` resource, bytes (default: Ray's, from the machine's RAM). Together
            with :class:`RayOptions` ``memory_per_actor`` it decides how many captioning actors a node may hold.
        temp_dir: Ray's temporary root (short path!); default a new ``/tmp/rayXXXX`` removed at shutdown.
        env: Extra environment for the node processes (their Ray workers inherit it), e.g. ``PYTHONPATH``.
            ``RAY_AUTH_MODE`` defaults to ``disabled`` (the nodes listen on this machine only; Ray 2.5x would otherwise
            turn token authentication on whenever ``~/.ray/auth_token`` exists); a driver must then connect with the
            same setting, see :meth:`driver_env`.
        start_timeout_s: How long a node may take to come up.
    """

    def __init__(self, *, head_cpus: int = 2, head_gpus: int = 0, object_store_memory: int = 200_000_000,
                 head_memory: int | None = None, temp_dir: str | None = None, env: dict[str, str] | None = None,
                 start_timeout_s: float = 120.0) -> None:
        self.head_cpus = head_cpus
        self.head_gpus = head_gpus
        self.object_store_memory = object_store_memory
        self.head_memory = head_memory
        self._own_temp = temp_dir is None
        self.temp_dir = temp_dir or tempfile.mkdtemp(prefix="ray", dir="/tmp")
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **(env or {})}
        self.start_timeout_s = start_timeout_s
        self.port = 0
        self.head: Node | None = None
        self.workers: list[Node] = []

    def driver_env(self) -> dict[str, str]:
        """Environment variables a driver process needs to connect (set them before ``ray.init``)."""
        return {"RAY_AUTH_MODE": self.env["RAY_AUTH_MODE"]}

    @property
    def address(self) -> str:
        """The GCS address to pass to ``ray.init`` / ``--address``."""
        return f"127.0.0.1:{self.port}"

    def _common(self, num_cpus: int, num_gpus: int = 0, memory: int | None = None) -> list[str]:
        return [*(["--memory", str(int(memory))] if memory is not None else []), "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus),
                "--object-store-memory", str(self.object_store_memory), "--temp-dir", self.temp_dir,
                "--disable-usage-stats", "--node-manager-port", str(free_port()),
                "--object-manager-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                "--dashboard-agent-grpc-port", str(free_port()), "--metrics-export-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port()), "--log-style", "record"]

    def _launch(self, name: str, args: list[str]) -> Node:
        log = Path(self.temp_dir) / f"{name}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen([_ray_executable(), "start", *args], stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        node = Node(name, proc, log)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if "Ray runtime started" in text:
                return node
            if proc.poll() is not None:
                raise RuntimeError(f"ray start ({name}) exited with {proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.2)
        self._stop(node)
        raise TimeoutError(f"ray start ({name}) did not come up in {self.start_timeout_s:.0f} s:\n"
                           f"{log.read_text(errors='replace')[-3000:]}")

    def start(self) -> LocalCluster:
        """Start the head node."""
        self.port = free_port()
        self.head = self._launch("head", ["--head", "--port", str(self.port), "--include-dashboard", "false",
                                          "--dashboard-port", str(free_port()),
                                          *self._common(self.head_cpus, self.head_gpus, self.head_memory)])
        return self

    def add_worker(self, num_cpus: int = 1, num_gpus: int = 0, memory: int | None = None) -> Node:
        """Start one more worker node (returns when its raylet runs; it registers with the head right after).

        ``memory``: the node's logical ``memory`` resource in bytes (default: Ray's, from the machine's RAM).
        """
        if self.head is None:
            raise RuntimeError("start the head node first")
        node = self._launch(f"worker{len(self.workers) + 1}",
                            ["--address", self.address, *self._common(num_cpus, num_gpus, memory)])
        self.workers.append(node)
        return node

    @staticmethod
    def wait_for_nodes(count: int, timeout_s: float = 60.0) -> None:
        """From a connected driver: wait until ``count`` nodes are alive."""
        import ray

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sum(1 for n in ray.nodes() if n.get("Alive")) >= count:
                return
            time.sleep(0.2)
        raise TimeoutError(f"fewer than {count} Ray nodes alive after {timeout_s:.0f} s")

    @staticmethod
    def _signal(pids: list[int], sig: int) -> None:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill(self, node: Node, sig: int = signal.SIGKILL) -> None:
        """Signal every process of ``node`` at once (default SIGKILL: a node failure) and reap its leader."""
        self._signal(node.pids(), sig)
        try:
            node.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._signal(node.pids(), signal.SIGKILL)
            node.process.wait()

    def _stop(self, node: Node) -> None:
        # SIGTERM first (ray start --block then stops its node cleanly), SIGKILL for whatever is left.
        pids = node.pids()
        self._signal(pids, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        self._signal([p for p in pids if _alive(p)], signal.SIGKILL)
        if node.process.poll() is None:
            node.process.wait()

    def shutdown(self) -> None:
        """Stop every node of this cluster (workers first) and remove its temporary folder (idempotent)."""
        for node in reversed(self.workers):
            self._stop(node)
        if self.head is not None:
            self._stop(self.head)
        self.workers, self.head = [], None
        if self._own_temp:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
