"""The worker loop: each Ray Train worker's share of its node's cores, and evaluation sharded
by user across Ray Train workers."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.distributed.train_loop import intra_op_threads
from invlearn_ray.evaluation.evaluate import evaluate_full_ranking, evaluate_split, evaluation_shard
from invlearn_ray.optim.collective import TorchDistributedCollective
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import build_model

EVAL_CONFIG = TrainConfig(backbone="gmf", embedding_dim=8, seed=3)


@pytest.mark.parametrize(
    ("local_workers", "cores", "threads"),
    [(1, 2, 2), (2, 2, 1), (3, 2, 1), (4, 16, 4), (3, 16, 5)],
)
def test_threads_are_the_cores_divided_among_the_node_workers(local_workers, cores, threads):
    assert intra_op_threads(local_workers, cores) == threads


def test_default_cores_are_those_this_process_may_run_on():
    assert intra_op_threads(1) == len(os.sched_getaffinity(0))


def evaluations(data, collective=None) -> dict[str, dict[str, float]]:
    """Validation row metrics and the test full ranking of the seeded, untrained model."""
    model = build_model(EVAL_CONFIG, data)
    return {
        "valid": evaluate_split(model, data.valid, collective=collective),
        "test": evaluate_full_ranking(
            model, data.test, data.seen_in_training, collective=collective
        ).metrics,
    }


def evaluate_on_worker(config: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A Ray Train worker: its users' validation and test rows, as the training loop keeps
    them; rank 0 returns every rank's reports and rows held."""
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    data = evaluation_shard(load_dataset(config["dataset"]), rank, world_size)
    mine = {
        "reports": evaluations(data, TorchDistributedCollective()),
        "rows_held": len(data.valid) + len(data.test),
    }
    everyone: list[dict[str, Any] | None] = [None] * world_size
    torch.distributed.all_gather_object(everyone, mine)
    return everyone if rank == 0 else None


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharded_eval") / "tiny"
    source = SourceSpec.from_synthetic(SyntheticConfig.preset("tiny"))
    build_dataset_in_memory(BuildConfig(source=source, shards=2, split=SplitOptions(seed=0)), out)
    return out


@pytest.mark.ray
@pytest.mark.parametrize("num_workers", [1, 2])
def test_workers_scoring_their_users_report_the_one_process_metrics(
    ray_session, dataset, tmp_path, num_workers
):
    # The worker function lives in this test module, which Ray's workers cannot import.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    trainer = TorchTrainer(
        evaluate_on_worker,
        train_loop_config={"dataset": str(dataset)},
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, resources_per_worker={"CPU": 0.5}
        ),
        run_config=ray.train.RunConfig(storage_path=str(tmp_path)),
    )
    ranks = trainer.fit().return_value
    data = load_dataset(dataset)
    expected = evaluations(data)

    # Identical on every worker, so early stopping decides the same everywhere.
    assert all(rank["reports"] == ranks[0]["reports"] for rank in ranks)
    for split, report in expected.items():
        got = ranks[0]["reports"][split]
        assert got.keys() == report.keys()
        for key, value in report.items():
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), (split, key)
    # Each worker holds its users' share of the rows: all of them together, none twice.
    held = [rank["rows_held"] for rank in ranks]
    assert sum(held) == len(data.valid) + len(data.test)
    if num_workers > 1:
        assert max(held) < 0.6 * sum(held)
