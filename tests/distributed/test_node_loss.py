"""A data-parallel run survives losing a worker node: its group restarts on the nodes left,
from the last checkpoint in the object store, and ends as an undisturbed run does.

The cluster is emulated (``tests/support/multinode.py``): a head without CPUs and three one-CPU
worker nodes sharing no disk, so the checkpoints a restarted group reads must come from S3.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from support.multinode import running_cluster, skip_reason

from invlearn_ray import storage
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.training.run_folder import read_metrics

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 5
RECOVERY_TIMEOUT_S = 300
TRAIN = [
    "--method", "ig", "--epochs", str(EPOCHS), "--workers", "2", "--max-failures", "2",
    "--set", "patience=100", "--set", "batch_size=64", "--set", "test_batch_size=64",
    "--set", "embedding_dim=8", "-v",
]  # fmt: skip


def train_command(dataset: str, out: str, address: str) -> list[str]:
    script = str(REPO_ROOT / "pipelines" / "train.py")
    return [
        sys.executable,
        script,
        "--dataset",
        dataset,
        "--out",
        out,
        "--address",
        address,
        *TRAIN,
    ]


def parent(pid: int) -> int:
    """A process's parent, from /proc (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def train_worker_nodes(nodes: dict[int, int]) -> list[int]:
    """The worker nodes (``pid -> index`` of their ``ray start`` process) that run a Ray Train
    worker now, found by walking each train worker's parents up to its node."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"RayTrainWorker" not in command:
            continue
        pid = int(entry.name)
        while pid > 1 and pid not in nodes:
            pid = parent(pid)
        if pid in nodes:
            found.append(nodes[pid])
    return sorted(set(found))


def wait_for_checkpoint(run_storage: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before its first checkpoint"
        if storage.exists(run_storage) and any(
            path.endswith("trainer.pt") for path in storage.list_files(run_storage, recursive=True)
        ):
            return
        time.sleep(0.5)
    raise AssertionError(f"no checkpoint under {run_storage} within {timeout} s")


@pytest.fixture
def three_node_cluster(s3_server):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="invlearn-loss-"))
    try:
        with running_cluster(root, s3_server.env(), workers=3) as cluster:
            yield cluster
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(900)
def test_a_run_losing_a_worker_node_resumes_on_the_others_and_ends_as_an_undisturbed_run(
    three_node_cluster, s3_env
):
    cluster = three_node_cluster
    bucket = s3_env.create_bucket(f"loss-{uuid.uuid4().hex[:8]}")
    dataset = storage.join(bucket, "tiny")
    source = SourceSpec.from_synthetic(SyntheticConfig.preset("tiny"))
    build_dataset_in_memory(BuildConfig(source=source, split=SplitOptions(seed=0)), dataset)
    env = {**cluster.env, "PYTHONPATH": str(REPO_ROOT)}

    calm_out, lossy_out = storage.join(bucket, "calm"), storage.join(bucket, "lossy")
    started = time.monotonic()
    calm = subprocess.run(
        train_command(dataset, calm_out, cluster.address), env=env, capture_output=True, text=True
    )
    calm_seconds = time.monotonic() - started
    assert calm.returncode == 0, calm.stderr[-3000:]

    started = time.monotonic()
    lossy = subprocess.Popen(
        train_command(dataset, lossy_out, cluster.address),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_checkpoint(storage.join(f"{lossy_out}.ray", "lossy"), lossy, timeout=300)
    nodes = {process.pid: index for index, process in enumerate(cluster.processes[1:])}
    hosting = train_worker_nodes(nodes)
    assert hosting, "no Ray Train worker found on a worker node"
    victim = cluster.processes[1 + hosting[0]]
    killed_at = time.monotonic()
    os.killpg(victim.pid, signal.SIGKILL)  # the node's raylet, workers and object store at once
    try:
        out, err = lossy.communicate(timeout=RECOVERY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        lossy.kill()
        out, err = lossy.communicate()
        raise AssertionError(f"no recovery in {RECOVERY_TIMEOUT_S} s:\n{err[-6000:]}") from None
    recovered_seconds = time.monotonic() - killed_at
    assert lossy.returncode == 0, err[-3000:]

    calm_metrics, lossy_metrics = read_metrics(calm_out), read_metrics(lossy_out)
    assert calm_metrics["resumed_from_epoch"] is None
    assert lossy_metrics["resumed_from_epoch"] is not None  # it restarted from a checkpoint
    assert lossy_metrics["epochs_run"] == calm_metrics["epochs_run"] == EPOCHS
    assert lossy_metrics["best_epoch"] == calm_metrics["best_epoch"]
    assert lossy_metrics["valid"] == pytest.approx(calm_metrics["valid"], rel=1e-6)
    assert lossy_metrics["test"] == pytest.approx(calm_metrics["test"], rel=1e-6)
    print(
        f"undisturbed run {calm_seconds:.1f} s; disturbed run {time.monotonic() - started:.1f} s, "
        f"{recovered_seconds:.1f} s from the node loss to the published run "
        f"(resumed at epoch {lossy_metrics['resumed_from_epoch']})"
    )
