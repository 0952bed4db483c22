"""A cluster whose nodes share no disk: a Ray build writes its shards straight to an object store,
and the benchmark keeps datasets and run folders there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
from support.datasets import assert_same_data, run_build_data

from invlearn_ray import storage
from invlearn_ray.data.loading import load_dataset

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_build_on_nodes_sharing_no_disk_writes_to_s3_and_loads_equal(
    multinode_cluster, s3_env, tmp_path
):
    """The head runs no tasks, so every shard is written by a task on a worker node."""
    uri = storage.join(s3_env.create_bucket(f"nodes-{uuid.uuid4().hex[:8]}"), "ds")
    tiny = ["--smoke-test", "--shards", "2", "-q"]
    on_cluster = [*tiny, "--address", multinode_cluster.address]
    run_build_data([*on_cluster, "--out", uri], env=multinode_cluster.env)
    run_build_data([*tiny, "--engine", "memory", "--out", str(tmp_path / "local")])
    loaded = load_dataset(uri, full_hash=True)
    assert loaded.manifest.engine == "ray" and loaded.manifest.conservation["holds"]
    assert_same_data(loaded, load_dataset(tmp_path / "local"))

    # A local folder would be each worker's own disk: refused before any work, in one line.
    local = str(multinode_cluster.local_out / "ds")
    refused = run_build_data([*on_cluster, "--out", local], multinode_cluster.env, expect_code=1)
    port = multinode_cluster.address.rsplit(":", 1)[1]  # Ray names the host by its own IP
    expected = rf"error: {local}: a local folder, but this Ray cluster \(\S+:{port}\) has 3 nodes"
    assert re.search(expected, refused.stderr), refused.stderr


def run_benchmark_cli(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    script = str(REPO_ROOT / "pipelines" / "full_benchmark.py")
    env = {**env, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, script, *argv], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_the_benchmark_on_nodes_sharing_no_disk_equals_the_one_node_benchmark(
    multinode_cluster, s3_env, tmp_path
):
    """Datasets and run folders in S3, written by tasks on the worker nodes; tables, figures and
    MLflow in the driver's --out. The results table is the one-node run's, number for number."""
    bucket = s3_env.create_bucket(f"bench-{uuid.uuid4().hex[:8]}")
    smoke = ["--smoke-test", "-q", "--methods", "none,ig", "--ratios", ""]
    on_cluster = [*smoke, "--address", multinode_cluster.address]
    run_benchmark_cli(
        [*on_cluster, "--out", str(tmp_path / "cluster"), "--storage", storage.join(bucket, "b")],
        multinode_cluster.env,
    )
    run_benchmark_cli([*smoke, "--out", str(tmp_path / "one")], dict(os.environ))

    cluster = pd.read_csv(tmp_path / "cluster" / "results.csv")
    one = pd.read_csv(tmp_path / "one" / "results.csv")
    pd.testing.assert_frame_equal(cluster, one)
    assert set(cluster["status"]) == {"ok"}
    runs = storage.list_files(storage.join(bucket, "b", "runs"), recursive=True)
    assert sum(path.endswith("model/model.pt") for path in runs) == len(cluster) * 2  # 2 seeds
