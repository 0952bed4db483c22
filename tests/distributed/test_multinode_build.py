"""A cluster whose nodes share no disk: a Ray build writes its shards straight to an object store,
the benchmark keeps datasets and run folders there, and recommendations are read and written
there by actors on the worker nodes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from support.datasets import assert_same_data, run_build_data

from invlearn_ray import storage
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.distributed.recommend import OutputExistsError, Recommender, check_output_dir
from invlearn_ray.distributed.train import run_training
from invlearn_ray.training.config import TrainConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_build_on_nodes_sharing_no_disk_writes_to_s3_and_loads_equal(
    cluster_nodes, s3_env, tmp_path
):
    """The head runs no tasks, so every shard is written by a task on a worker node."""
    uri = storage.join(s3_env.create_bucket(f"nodes-{uuid.uuid4().hex[:8]}"), "ds")
    tiny = ["--smoke-test", "--shards", "2", "-q"]
    on_cluster = [*tiny, "--address", cluster_nodes.address]
    run_build_data([*on_cluster, "--out", uri], env=cluster_nodes.env)
    run_build_data([*tiny, "--engine", "memory", "--out", str(tmp_path / "local")])
    loaded = load_dataset(uri, full_hash=True)
    assert loaded.manifest.engine == "ray" and loaded.manifest.conservation["holds"]
    assert_same_data(loaded, load_dataset(tmp_path / "local"))

    # A local folder would be each worker's own disk: refused before any work, in one line.
    local = str(cluster_nodes.local_out / "ds")
    refused = run_build_data([*on_cluster, "--out", local], cluster_nodes.env, expect_code=1)
    port = cluster_nodes.address.rsplit(":", 1)[1]  # Ray names the host by its own IP
    nodes = 1 + cluster_nodes.workers
    expected = (
        rf"error: {local}: a local folder, but this Ray cluster \(\S+:{port}\) has {nodes} nodes"
    )
    assert re.search(expected, refused.stderr), refused.stderr


def run_cli(
    name: str, argv: list[str], env: dict[str, str], expect_code: int = 0
) -> subprocess.CompletedProcess:
    """Run ``pipelines/<name>.py argv`` in a new process with ``env`` and this checkout."""
    script = str(REPO_ROOT / "pipelines" / f"{name}.py")
    env = {**env, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, script, *argv], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == expect_code, done.stderr[-4000:]
    return done


def run_benchmark_cli(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_cli("full_benchmark", argv, env)


def test_the_benchmark_on_nodes_sharing_no_disk_equals_the_one_node_benchmark(
    cluster_nodes, s3_env, tmp_path
):
    """Datasets and run folders in S3, written by tasks on the worker nodes; tables, figures and
    MLflow in the driver's --out. The results table is the one-node run's, number for number."""
    bucket = s3_env.create_bucket(f"bench-{uuid.uuid4().hex[:8]}")
    smoke = ["--smoke-test", "-q", "--methods", "none,ig", "--ratios", ""]
    on_cluster = [*smoke, "--address", cluster_nodes.address]
    run_benchmark_cli(
        [*on_cluster, "--out", str(tmp_path / "cluster"), "--storage", storage.join(bucket, "b")],
        cluster_nodes.env,
    )
    run_benchmark_cli([*smoke, "--out", str(tmp_path / "one")], dict(os.environ))

    cluster = pd.read_csv(tmp_path / "cluster" / "results.csv")
    one = pd.read_csv(tmp_path / "one" / "results.csv")
    pd.testing.assert_frame_equal(cluster, one)
    assert set(cluster["status"]) == {"ok"}
    runs = storage.list_files(storage.join(bucket, "b", "runs"), recursive=True)
    assert sum(path.endswith("model/model.pt") for path in runs) == len(cluster) * 2  # 2 seeds


def test_recommendations_on_nodes_sharing_no_disk_read_and_write_s3(
    cluster_nodes, s3_env, tmp_path
):
    """The scoring actor runs on a worker node: it reads the model from S3 and writes its
    Parquet there (by default beside the run), the rows of a local copy's ranking, committed
    last; a local --model (on the driver's disk only) is refused before any work, in one line."""
    dataset = tmp_path / "tiny"
    source = SourceSpec.from_synthetic(SyntheticConfig.preset("tiny"))
    build_dataset_in_memory(BuildConfig(source=source, split=SplitOptions(seed=0)), dataset)
    config = TrainConfig(method="ns", backbone="gmf", embedding_dim=8, epochs=1, batch_size=64)
    run = storage.join(s3_env.create_bucket(f"recs-{uuid.uuid4().hex[:8]}"), "run")
    run_training(dataset, config, num_workers=0, output_dir=run)  # committed in S3
    on_cluster = ["--k", "5", "-q", "--address", cluster_nodes.address]

    run_cli("recommend", [*on_cluster, "--model", run], cluster_nodes.env)
    out = f"{run}.recommendations"
    filesystem, path = storage.resolve(out)
    written = pq.read_table(path, filesystem=filesystem)
    local = tmp_path / "local_run"
    storage.copy_tree(run, str(local))
    recommender = Recommender.load(local / "model")  # the same model, ranked here from disk
    expected = recommender.recommend(recommender.user_ids.tolist(), 5)
    order = [("user", "ascending"), ("rank", "ascending")]
    assert written.sort_by(order).equals(expected.sort_by(order))
    assert storage.read_commit(out)["rows"] == written.num_rows
    assert storage.WRITING_MARKER not in storage.list_files(out)
    with pytest.raises(OutputExistsError, match="already holds recommendations"):
        check_output_dir(out, overwrite=False)

    argv = [*on_cluster, "--model", str(local), "--out", storage.join(storage.parent(run), "x")]
    refused = run_cli("recommend", argv, cluster_nodes.env, expect_code=1)
    port = cluster_nodes.address.rsplit(":", 1)[1]
    expected_error = rf"error: {local}/model: a local folder, but this Ray cluster \(\S+:{port}\)"
    assert re.search(expected_error, refused.stderr), refused.stderr
    assert refused.stderr.count("\n") == 1
