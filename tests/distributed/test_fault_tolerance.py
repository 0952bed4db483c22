"""A worker failure mid-run: Ray Train restarts the group, which resumes from the checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import TrainingDiverged

pytestmark = pytest.mark.ray

WORKERS = 2
FAIL_AT_EPOCH = 2
# IG with the persistent-Adam direction rule: its moment estimates must survive the restart
# too, not only the model and the optimizer.
CONFIG = TrainConfig(
    method="ig",
    backbone="gmf",
    embedding_dim=8,
    lr=0.01,
    step_rule="adam",
    batch_size=32,
    test_batch_size=8,
    epochs=4,
    patience=10,
    seed=3,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fault") / "tiny"
    source = SourceSpec.from_synthetic(SyntheticConfig.preset("tiny"))
    build_dataset_in_memory(BuildConfig(source=source, shards=3, split=SplitOptions(seed=0)), out)
    return out


def same_metrics(left: dict, right: dict) -> bool:
    """Exact equality, with NaN (an undefined metric) equal to itself."""

    def same(a, b) -> bool:
        both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
        return both_nan or a == b

    return left.keys() == right.keys() and all(same(left[key], right[key]) for key in left)


# Sharded tables take the sign rule (the adam rule's moments are whole tables); each restarted
# worker reads its own rows of the tables and their Adam moments back.
SHARDED = CONFIG.replace(shard_tables=True, step_rule="sign", dual_lr_ratio=50.0)


@pytest.mark.parametrize("config", [CONFIG, SHARDED], ids=["replicated", "sharded"])
def test_a_failed_worker_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
    ray_session, dataset, tmp_path, config
):
    from invlearn_ray.distributed.train import run_training

    marker = tmp_path / "failed_once"
    interrupted = run_training(
        dataset,
        config,
        num_workers=WORKERS,
        output_dir=tmp_path / "interrupted",
        max_failures=1,
        test_switches={
            "_test_fail_once_at_epoch": FAIL_AT_EPOCH,
            "_test_fail_rank": 1,
            "_test_fail_marker": str(marker),
        },
    )
    uninterrupted = run_training(
        dataset, config, num_workers=WORKERS, output_dir=tmp_path / "uninterrupted", max_failures=0
    )

    assert "rank 1" in marker.read_text()
    assert interrupted["resumed_from_epoch"] == FAIL_AT_EPOCH
    assert uninterrupted["resumed_from_epoch"] is None
    assert interrupted["epochs_run"] == uninterrupted["epochs_run"] == config.epochs
    assert interrupted["best_epoch"] == uninterrupted["best_epoch"]
    # Exact, not approximate: the resumed state is the saved tensors bit for bit, every random
    # draw is keyed by (seed, epoch, rank), each rank gets the same shard on every attempt,
    # and the same reductions run in the same order — so the replay is the same computation.
    assert same_metrics(interrupted["valid"], uninterrupted["valid"])
    assert same_metrics(interrupted["test"], uninterrupted["test"])
    weights = [
        torch.load(Path(run["output_dir"]) / "model" / "model.pt", weights_only=True)
        for run in (interrupted, uninterrupted)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_a_failure_beyond_the_allowed_restarts_names_the_worker_error(
    ray_session, dataset, tmp_path
):
    from invlearn_ray.distributed.train import TrainingRunError, run_training

    # One worker: the failure comes after a complete one-worker start-up (shards included).
    with pytest.raises(TrainingRunError, match=r"rank 0: .*InjectedFailure.*epoch 0"):
        run_training(
            dataset,
            CONFIG,
            num_workers=1,
            output_dir=tmp_path / "out",
            max_failures=0,
            test_switches={
                "_test_fail_once_at_epoch": 0,
                "_test_fail_rank": 0,
                "_test_fail_marker": str(tmp_path / "marker"),
            },
        )


def test_a_diverged_run_stops_every_worker_at_once_and_publishes_nothing(
    ray_session, dataset, tmp_path
):
    from invlearn_ray.distributed.train import run_training

    out = tmp_path / "diverged"
    # max_failures=1: a worker that raised would be restarted and fail as TrainingRunError.
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 0: the training"):
        run_training(
            dataset, CONFIG.replace(lr=1e6), num_workers=WORKERS, output_dir=out, max_failures=1
        )
    # Nothing published, and no checkpoints kept that would refuse a rerun with another lr.
    assert list(tmp_path.iterdir()) == []
