"""An emulated multi-node Ray cluster on one machine: nodes that share no disk.

A head node that runs no tasks (``--num-cpus=0``) and :data:`WORKERS` worker nodes of one CPU,
each started as its own ``ray start --block`` in a private mount namespace
(``unshare -m --propagation private``) with private tmpfs mounts over:

* its Ray temp folder (``--temp-dir``, where its sockets, logs and spilled objects live) and
  over ``/tmp/ray``, so nothing of one node's is visible to another or to another session;
* :attr:`Cluster.local_out` — a folder that exists on the host too, so a task that writes a
  *local* output there writes to its own node's disk, which the driver cannot see, exactly as
  on a real cluster.

Every node listens on its own ports (GCS, dashboard, node manager, object manager, metrics export,
dashboard agent listen/gRPC, runtime-env agent, Ray client server, worker range), all chosen
free here, so the cluster never collides with a default ``ray start`` or another session's
Ray. The head's temp folder is the cluster's own, so its ``ray_current_cluster`` file is too: a
bare ``ray.init()`` elsewhere on the machine never finds this cluster.

Drivers connect with ``ray.init(address=cluster.address)`` (e.g. ``build_data.py --address``);
with several nodes on 127.0.0.1, Ray attaches a driver to the head node, whose sockets are on
the host. Needs root (``mount``) and ``unshare``; tests skip, saying why, without them.
Stopped by SIGKILL to each node's process group (SIGTERM leaves the head's GCS running).
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.s3_server import free_ports

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKERS = 3
START_TIMEOUT_S = 180
"""Head and two workers were alive 16-28 s after the start here (2 shared, loaded cores)."""
OBJECT_STORE_BYTES = 200 * 2**20
_WORKER_PORTS = 60
_NODE_SLOTS = 16
"""Worker port ranges one cluster hands out in turn (head, workers, replacements)."""
_ALIVE = 0  # GcsNodeInfo.GcsNodeState.ALIVE


@dataclass
class Cluster:
    """A running emulated cluster.

    Attributes:
        address: the GCS address drivers pass to ``ray.init(address=...)``.
        env: the environment its nodes run with (a driver should run with it too).
        local_out: a folder private to each node (and to the host): local writes of tasks go
            to their own node's disk.
    """

    address: str
    env: dict[str, str]
    local_out: Path
    root: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    """``ray start`` of the head, then of each worker node (index ``1 + i``)."""
    logs: list[Path] = field(default_factory=list)
    worker_ports_from: int = field(
        default_factory=lambda: random.randrange(20_000, 32_000 - _NODE_SLOTS * _WORKER_PORTS)
    )
    """Below the ephemeral range (free_ports' picks) and above Ray's default 10002-19999, at
    a random offset so that two clusters rarely overlap; within it each node started gets
    the next range of its own, so no two nodes of this cluster ever share a worker port."""

    def node_ports(self) -> list[str]:
        """The port options of the next node to start."""
        slot = len(self.logs) % _NODE_SLOTS
        return _node_ports(self.worker_ports_from + slot * _WORKER_PORTS)

    @property
    def workers(self) -> int:
        return len(self.processes) - 1

    def start_worker(self, index: int) -> None:
        """Start worker node ``index`` (a new one, or in place of one that died), without
        waiting for it to join."""
        node_tmp = self.root / f"worker{index}-{len(self.logs)}"
        node_tmp.mkdir()
        start = [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--block",
            f"--address={self.address}",
            "--num-cpus=1",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={node_tmp}",
            *self.node_ports(),
        ]
        private = " && ".join(
            [
                f"mount -t tmpfs none {shlex.quote(str(node_tmp))}",
                f"mount -t tmpfs none {shlex.quote(str(self.local_out))}",
                "mkdir -p /tmp/ray",
                "mount -t tmpfs none /tmp/ray",
                "exec " + shlex.join(start),
            ]
        )
        command = ["unshare", "-m", "--propagation", "private", "bash", "-c", private]
        log = node_tmp.with_suffix(".log")
        process = _start(command, self.env, log)
        self.logs.append(log)
        if 1 + index < len(self.processes):
            self.processes[1 + index] = process
        else:
            self.processes.append(process)

    def replace_lost_workers(self) -> None:
        """Start a new node for every worker node that died (a node-loss test kills one), and
        wait until all are alive: the next test gets the cluster it expects."""
        lost = [i for i in range(self.workers) if self.processes[1 + i].poll() is not None]
        for index in lost:
            _kill_group(self.processes[1 + index])
            self.start_worker(index)
        if lost:
            _wait_for_nodes(self, self.workers, self.logs)


def skip_reason() -> str | None:
    """Why an emulated cluster cannot start here (None when it can)."""
    if os.geteuid() != 0:
        return "the emulated multi-node cluster mounts tmpfs: needs root"
    if shutil.which("unshare") is None:
        return "the emulated multi-node cluster needs unshare (util-linux)"
    if not (Path(sys.executable).parent / "ray").is_file():
        return "no `ray` command beside this Python"
    return None


def _node_ports(low: int) -> list[str]:
    """The per-node port options, each port free now, workers on ``low`` and above."""
    manager, objects, metrics, agent, agent_grpc, runtime_env = free_ports(6)
    return [
        f"--node-manager-port={manager}",
        f"--object-manager-port={objects}",
        f"--metrics-export-port={metrics}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--min-worker-port={low}",
        f"--max-worker-port={low + _WORKER_PORTS - 1}",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        "--disable-usage-stats",
    ]


@contextmanager
def running_cluster(root: Path, env: dict[str, str], workers: int = WORKERS) -> Iterator[Cluster]:
    """Start a head and ``workers`` worker nodes under ``root``; stop them all on exit.

    Args:
        root: a fresh folder for the nodes' temp folders and logs.
        env: variables every node runs with on top of this process's (e.g. storage settings:
            the nodes of a real cluster get them from their instance configuration).

    Raises:
        RuntimeError: a node exited, or fewer than ``workers`` workers were alive within
            :data:`START_TIMEOUT_S` (the message holds the end of the node logs).
    """
    local_out = root / "local_out"
    local_out.mkdir(parents=True)
    pythonpath = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
    node_env = {
        **os.environ,
        **env,
        "PYTHONPATH": os.pathsep.join(pythonpath),  # this checkout, as tasks import it
        "RAY_AUTH_MODE": "disabled",
        "RAY_raylet_start_wait_time_s": str(START_TIMEOUT_S),
        "RAY_USAGE_STATS_ENABLED": "0",
        # A killed node is declared dead after 3 failed checks 1 s apart instead of 5 checks
        # 3 s apart (15 s): the node-loss tests wait for that before any recovery starts.
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
    }
    gcs, client, dashboard = free_ports(3)
    cluster = Cluster(address=f"127.0.0.1:{gcs}", env=node_env, local_out=local_out, root=root)
    head_tmp = root / "head"
    head_tmp.mkdir()
    head = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        "--num-cpus=0",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        f"--ray-client-server-port={client}",
        "--include-dashboard=false",
        # Bound even without the dashboard; the default 8265 may be another Ray's.
        f"--dashboard-port={dashboard}",
        f"--temp-dir={head_tmp}",
        *cluster.node_ports(),
    ]
    try:
        cluster.processes.append(_start(head, node_env, root / "head.log"))
        cluster.logs.append(root / "head.log")
        _wait_for_nodes(cluster, 1, cluster.logs, with_cpus=False)
        for index in range(workers):
            cluster.start_worker(index)
        _wait_for_nodes(cluster, workers, cluster.logs)
        yield cluster
    finally:
        for process in reversed(cluster.processes):
            _kill_group(process)


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as output:
        return subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def _alive_nodes(address: str, with_cpus: bool) -> int:
    """Alive nodes (only those with CPUs: ``with_cpus``), as the GCS sees them (-1 while it
    does not answer)."""
    from ray._raylet import GcsClient

    try:
        nodes = GcsClient(address=address).get_all_node_info(timeout=5)
    except Exception:  # noqa: BLE001 - the GCS is still starting: any failure means "not yet"
        return -1
    return sum(
        1
        for info in nodes.values()
        if info.state == _ALIVE and (not with_cpus or info.resources_total.get("CPU", 0) > 0)
    )


def _wait_for_nodes(cluster: Cluster, count: int, logs: list[Path], with_cpus: bool = True) -> None:
    """Wait until ``count`` nodes are alive; the head is waited for before any worker starts,
    since a worker that asks a loaded GCS too early gives up ("No node info found for head
    node in GCS")."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        exited = [p.args for p in cluster.processes if p.poll() is not None]
        if exited:
            break
        if _alive_nodes(cluster.address, with_cpus) >= count:
            return
        time.sleep(1)
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}" for log in logs)
    what = "alive workers" if with_cpus else "alive nodes"
    raise RuntimeError(
        f"the emulated cluster did not get {count} {what} within {START_TIMEOUT_S} s; "
        f"node logs:\n{tails}"
    )


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    else:  # the node's own children may outlive it
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def multinode_cluster(s3_server) -> Iterator[Cluster]:
    """A head (no CPUs) and three one-CPU worker nodes sharing no disk, started once for the
    module (a start costs 20-60 s here; not kept for the session, where its nodes would load
    every later test); the nodes reach the session's S3 server through the AWS variables, as
    a cloud cluster's nodes would S3. Each test gets all three workers alive: a node a test
    killed is replaced before the next one."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    # A short root: Ray's socket paths under a node's temp folder must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="invlearn-nodes-"))
    try:
        with running_cluster(root, s3_server.env()) as cluster:
            yield cluster
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster_nodes(multinode_cluster) -> Iterator[Cluster]:
    """The module's emulated cluster with every worker node alive, for one test."""
    multinode_cluster.replace_lost_workers()
    yield multinode_cluster
