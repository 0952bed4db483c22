"""Run a command line on Ray's fake autoscaling cluster and report the node counts it saw.

Run alone, inside its own PID, network and mount namespaces (``tests/distributed/
test_autoscaling.py`` does): Ray's ``AutoscalingCluster`` starts with ``ray stop --force``,
which would otherwise stop every Ray on the machine, and its head takes Ray's default port.

Prints one JSON line: the largest number of alive worker nodes seen while the command ran, the
number left once it had been idle, the command's exit code and seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import ray
from ray.cluster_utils import AutoscalingCluster

IDLE_TIMEOUT_MINUTES = 0.1
"""Workers idle for 6 s are released (cluster.yaml's is 5 minutes)."""


class FakeCluster(AutoscalingCluster):
    """Ray's AutoscalingCluster with its config built here: the wheel does not ship the
    ``fake_multi_node/example.yaml`` that its own ``_generate_config`` reads."""

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **kw):
        return {
            "cluster_name": "fake_multinode",
            "max_workers": 8,
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "available_node_types": {
                **worker_node_types,
                "ray.head.default": {
                    "resources": dict(head_resources),
                    "node_config": {},
                    "max_workers": 0,
                },
            },
            "head_node_type": "ray.head.default",
            "auth": {},
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
            "docker": {},
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
            **kw,
        }


def alive_workers() -> int:
    return sum(1 for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0))


def main(command: list[str], max_workers: int = 2, release_timeout: float = 120.0) -> dict:
    cluster = FakeCluster(
        head_resources={"CPU": 0},
        worker_node_types={
            "cpu_worker": {
                "resources": {"CPU": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": max_workers,
            }
        },
    )
    cluster.start()
    try:
        ray.init(address="auto", log_to_driver=False)
        counts: list[int] = [alive_workers()]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                counts.append(alive_workers())
                time.sleep(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started = time.perf_counter()
        returncode = subprocess.run(command).returncode
        seconds = time.perf_counter() - started
        done.set()
        watcher.join()
        deadline = time.monotonic() + release_timeout
        while alive_workers() and time.monotonic() < deadline:
            time.sleep(1.0)
        return {
            "workers_at_start": counts[0],
            "max_workers_seen": max(counts),
            "workers_after_idle": alive_workers(),
            "returncode": returncode,
            "seconds": round(seconds, 1),
            "release_seconds": round(time.monotonic() - (deadline - release_timeout), 1),
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print("PROBE " + json.dumps(main(sys.argv[1:])), flush=True)
