"""A Ray build on a cluster whose nodes share no disk: shards go straight to an object store."""

from __future__ import annotations

import uuid

import pytest
from support.datasets import assert_same_data, run_build_data

from invlearn_ray import storage
from invlearn_ray.data.loading import load_dataset

pytestmark = [pytest.mark.ray, pytest.mark.slow]


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
    assert f"error: {local}: a local folder, but this Ray cluster has 3 nodes" in refused.stderr
