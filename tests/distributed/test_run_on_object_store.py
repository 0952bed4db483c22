"""A run whose dataset and run folder live in an object store (a real S3 server): the same
run as a local one, uploaded whole with its commit file last."""

from __future__ import annotations

import uuid

import pytest

from invlearn_ray import storage
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.distributed.train import run_training
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.run_folder import (
    RunExistsError,
    is_finished_run,
    read_direction_log,
    read_metrics,
)

CONFIG = TrainConfig(method="ig", epochs=2, batch_size=64, test_batch_size=64, embedding_dim=8)


@pytest.fixture
def bucket(s3_env) -> str:
    return s3_env.create_bucket(f"runs-{uuid.uuid4().hex[:8]}")


def test_a_run_on_s3_equals_the_local_run_and_is_committed_last(bucket, tiny_dataset, tmp_path):
    dataset = storage.join(bucket, "tiny")
    source = SourceSpec.from_synthetic(SyntheticConfig.preset("tiny"))
    build_dataset_in_memory(BuildConfig(source=source, split=SplitOptions(seed=0)), dataset)
    out = storage.join(bucket, "run")

    remote = run_training(dataset, CONFIG, num_workers=0, output_dir=out)
    local = run_training(tiny_dataset, CONFIG, num_workers=0, output_dir=tmp_path / "run")

    assert remote["test"] == local["test"] and remote["output_dir"] == out
    assert is_finished_run(out)
    committed = storage.read_commit(out)  # every file present, sizes and hashes as committed
    assert {"metrics.json", "model/model.pt", "model/id_map/users.parquet"} <= {
        record["path"] for record in committed["files"]
    }
    assert read_metrics(out)["test"] == remote["test"]
    assert read_direction_log(out).keys() == {"direction_log", "weight_histograms"}
    weights = storage.read_bytes(storage.join(out, "model", "model.pt"))
    assert weights == (tmp_path / "run" / "model" / "model.pt").read_bytes()

    with pytest.raises(RunExistsError, match="already holds a finished run"):
        run_training(dataset, CONFIG, num_workers=0, output_dir=out)
    # Replacing it: the old commit goes first, so a crash mid-upload leaves no finished run.
    run_training(dataset, CONFIG.replace(seed=1), num_workers=0, output_dir=out, overwrite=True)
    assert read_metrics(out)["config"]["seed"] == 1
