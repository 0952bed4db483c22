"""Runs and studies survive losing a worker node: a data-parallel run's group, or a study's
trial, restarts on the nodes left from its last checkpoint in the object store, and ends as
an undisturbed one does.

The cluster is emulated (``tests/support/multinode.py``): a head without CPUs and three one-CPU
worker nodes sharing no disk, so the checkpoints a restarted group or trial reads must come
from S3. The module's cluster replaces the node a test killed before the next test.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from invlearn_ray import storage
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.training.run_folder import read_metrics

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 30
"""Epochs of ~0.3 s: the run is still going seconds after its first checkpoint appears."""
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


def nodes_running(nodes: dict[int, int], process_title: bytes) -> list[int]:
    """The worker nodes (``pid -> index`` of their ``ray start`` process) that run a process
    titled ``process_title`` now (a Ray Train worker, a Tune trial), found by walking each such
    process's parents up to its node."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if process_title not in command:
            continue
        pid = int(entry.name)
        while pid > 1 and pid not in nodes:
            pid = parent(pid)
        if pid in nodes:
            found.append(nodes[pid])
    return sorted(set(found))


def wait_for_checkpoint(
    run_storage: str, process: subprocess.Popen, timeout: float, runs: int = 1
) -> None:
    """Wait until ``runs`` runs under ``run_storage`` (a study's trials) each have a checkpoint:
    a trial killed before its first one restarts from scratch, which is no resume."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before its first checkpoint"
        if storage.exists(run_storage):
            checkpointed = {
                path.rsplit("/checkpoint_", 1)[0]
                for path in storage.list_files(run_storage, recursive=True)
                if path.endswith("trainer.pt")
            }
            if len(checkpointed) >= runs:
                return
        time.sleep(0.5)
    raise AssertionError(f"not {runs} run(s) with a checkpoint under {run_storage} in {timeout} s")


def tiny_dataset_in_s3(s3_env, prefix: str) -> tuple[str, str]:
    """A new bucket and the tiny synthetic dataset built into it: (bucket, dataset)."""
    bucket = s3_env.create_bucket(f"{prefix}-{uuid.uuid4().hex[:8]}")
    dataset = storage.join(bucket, "tiny")
    source = SourceSpec.from_synthetic(SyntheticConfig.preset("tiny"))
    build_dataset_in_memory(BuildConfig(source=source, split=SplitOptions(seed=0)), dataset)
    return bucket, dataset


def kill_a_node_and_wait(
    cluster, process: subprocess.Popen, process_title: bytes, what: str
) -> tuple[str, float]:
    """SIGKILL the worker node that runs a process titled ``process_title`` (its raylet,
    workers and object store at once), then wait for ``process`` to end; returns its stderr
    and the seconds from the kill to its end."""
    nodes = {node.pid: index for index, node in enumerate(cluster.processes[1:])}
    hosting = nodes_running(nodes, process_title)
    assert hosting, f"no {what} found on a worker node"
    killed_at = time.monotonic()
    os.killpg(cluster.processes[1 + hosting[0]].pid, signal.SIGKILL)
    try:
        _, err = process.communicate(timeout=RECOVERY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"no recovery in {RECOVERY_TIMEOUT_S} s:\n{err[-6000:]}") from None
    assert process.returncode == 0, err[-3000:]
    return err, time.monotonic() - killed_at


@pytest.mark.timeout(900)
def test_a_run_losing_a_worker_node_resumes_on_the_others_and_ends_as_an_undisturbed_run(
    cluster_nodes, s3_env
):
    cluster = cluster_nodes
    assert cluster.workers == 3
    bucket, dataset = tiny_dataset_in_s3(s3_env, "loss")
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
    _, recovered_seconds = kill_a_node_and_wait(
        cluster, lossy, b"RayTrainWorker", "Ray Train worker"
    )

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


STUDY_EPOCHS = 20
STUDY = [
    "--space", str(REPO_ROOT / "tune_spaces" / "none.yaml"), "--trials", "2",
    "--concurrency", "2", "--search", "random", "--grace-period", str(STUDY_EPOCHS), "--no-final",
    "--set", "backbone=gmf", "--set", f"epochs={STUDY_EPOCHS}", "--set", "patience=100",
    "--set", "batch_size=8", "--set", "embedding_dim=8",
]  # fmt: skip
"""Two trials at once on two of the three nodes; every trial runs all its epochs (the grace
period covers them: no scheduler decision depends on timing), enough small-batch epochs
(~0.2 s each) that both are still running seconds after each has its first checkpoint."""


def study_command(dataset: str, out: Path, study_storage: str, address: str) -> list[str]:
    script = str(REPO_ROOT / "pipelines" / "tune.py")
    return [
        sys.executable, script, "--dataset", dataset, "--out", str(out),
        "--storage", study_storage, "--address", address, *STUDY,
    ]  # fmt: skip


def trial_scores(study_dir: Path) -> dict[tuple[str, ...], tuple[str, str, str]]:
    """Each trial's (status, best validation score, epochs reported), by its parameters."""
    with (study_dir / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    searched = ("lr", "weight_decay", "init_scale")
    return {
        tuple(row[key] for key in searched): (
            row["status"],
            row["best_valid"],
            row["epochs_reported"],
        )
        for row in rows
    }


@pytest.mark.timeout(900)
def test_a_study_losing_a_node_mid_trial_restarts_it_elsewhere_and_ends_as_an_undisturbed_one(
    cluster_nodes, s3_env, tmp_path
):
    cluster = cluster_nodes
    assert cluster.workers == 3
    bucket, dataset = tiny_dataset_in_s3(s3_env, "study")
    env = {**cluster.env, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)  # each study's own store, under its --out

    calm_storage = storage.join(bucket, "calm")
    calm = subprocess.run(
        study_command(dataset, tmp_path / "calm", calm_storage, cluster.address),
        env=env,
        capture_output=True,
        text=True,
    )
    assert calm.returncode == 0, calm.stderr[-3000:]

    lossy_storage = storage.join(bucket, "lossy")
    lossy = subprocess.Popen(
        study_command(dataset, tmp_path / "lossy", lossy_storage, cluster.address),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_checkpoint(storage.join(lossy_storage, "tune"), lossy, timeout=300, runs=2)
    # A function trainable runs in Tune's actor class ImplicitFunc ("ray::ImplicitFunc"; its
    # training thread does not retitle it). Both trials still run: neither is near its end.
    err, _ = kill_a_node_and_wait(cluster, lossy, b"ray::ImplicitFunc", "running trial")

    calm_trials, lossy_trials = trial_scores(tmp_path / "calm"), trial_scores(tmp_path / "lossy")
    assert len(calm_trials) == 2
    assert all(status == "TERMINATED" for status, _, _ in calm_trials.values())
    # Same draws, same scores, every epoch reported once.
    assert lossy_trials == calm_trials, f"{lossy_trials} != {calm_trials}\n{err[-4000:]}"
    outputs = storage.join(lossy_storage, "trial_outputs")
    trials = {name.split("/")[0] for name in storage.list_files(outputs, recursive=True)}
    assert len(trials) == 2
    resumed = [read_metrics(storage.join(outputs, trial))["resumed_from_epoch"] for trial in trials]
    assert any(epoch is not None for epoch in resumed), f"no trial resumed:\n{err[-5000:]}"
