"""Data-parallel IG on Ray Train reproduces single-process IG fed the same global batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.distributed.train_loop import ExactSplitConfig, plan_file_name
from invlearn_ray.methods.inverse_gradient import CANDIDATES
from invlearn_ray.methods.objectives import TrainBatch
from invlearn_ray.training.batches import EpochPlan, MetaBatch
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import Trainer

pytestmark = pytest.mark.ray

WORKERS = 2
# A candidate step of 50x the learning rate (sign rule) overshoots often enough that the
# meta steps choose all three of none / direct / inverse on this data (checked below). Unlabeled
# rows come from both sources, so the split of the observed-unlabeled rows is exercised too.
CONFIG = TrainConfig(
    method="ig",
    unlabeled_source="both",
    backbone="gmf",
    embedding_dim=8,
    lr=0.01,
    dual_lr_ratio=50.0,
    step_rule="sign",
    batch_size=32,
    test_batch_size=8,
    epochs=3,
    patience=10,
    seed=1,
)


class ReplayBatchSource:
    """Replays the workers' recorded local batches, joined step by step into global batches."""

    def __init__(self, directory: Path, world_size: int) -> None:
        self.directory = directory
        self.world_size = world_size

    def local_plans(self, epoch: int) -> list[dict]:
        return [
            torch.load(self.directory / plan_file_name(epoch, rank), weights_only=True)
            for rank in range(self.world_size)
        ]

    def plan(self, epoch: int, with_meta: bool = True) -> EpochPlan:
        plans = self.local_plans(epoch)

        def joined(kind: str, step: int) -> dict[str, torch.Tensor]:
            parts = [plan[kind][step] for plan in plans]
            return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

        n_supervised, n_meta = len(plans[0]["supervised"]), len(plans[0]["meta"])
        assert all(len(p["supervised"]) == n_supervised for p in plans), "workers disagree"
        assert all(len(p["meta"]) == n_meta for p in plans), "workers disagree on meta steps"
        return EpochPlan(
            supervised=[TrainBatch(**joined("supervised", k)) for k in range(n_supervised)],
            meta=[MetaBatch(**joined("meta", k)) for k in range(n_meta)] if with_meta else [],
        )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dp_ig") / "tiny"
    source = SourceSpec.from_synthetic(SyntheticConfig.preset("tiny"))
    build_dataset_in_memory(BuildConfig(source=source, shards=3, split=SplitOptions(seed=0)), out)
    return out


@pytest.fixture(scope="module")
def distributed_run(ray_session, dataset, tmp_path_factory) -> tuple[dict, Path]:
    from invlearn_ray.distributed.train import run_training

    work = tmp_path_factory.mktemp("dp_ig_run")
    plans = work / "plans"
    summary = run_training(
        dataset,
        CONFIG,
        num_workers=WORKERS,
        output_dir=work / "out",
        max_failures=0,
        test_switches={"_test_record_batches_dir": str(plans)},
    )
    return summary, plans


def test_two_workers_match_single_process_ig_on_the_same_global_batches(dataset, distributed_run):
    summary, plans = distributed_run
    state = torch.load(
        Path(summary["last_checkpoint"]) / "trainer.pt", weights_only=True, map_location="cpu"
    )["trainer"]

    replay = Trainer(CONFIG, load_dataset(dataset), batch_source=ReplayBatchSource(plans, WORKERS))
    while not replay.should_stop:
        replay.run_epoch(replay.next_epoch)

    assert replay.next_epoch == state["next_epoch"] == CONFIG.epochs
    distributed_choices = torch.cat(state["direction_log"]["choice"])
    replay_choices = torch.cat(replay.directions.log["choice"])
    assert torch.equal(distributed_choices, replay_choices)
    chosen = {CANDIDATES[index] for index in distributed_choices.tolist()}
    assert {"none", "inverse"} & chosen, f"every meta step went direct: {chosen}"
    assert len(distributed_choices) >= 3 * CONFIG.epochs

    for name, tensor in replay.model.state_dict().items():
        torch.testing.assert_close(state["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(
        torch.cat(state["direction_log"]["losses"]),
        torch.cat(replay.directions.log["losses"]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_shards_cover_training_rows_exactly_once(dataset, distributed_run):
    _, plans = distributed_run
    data = load_dataset(dataset)

    def keys(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return users * data.n_items + items

    for epoch in range(CONFIG.epochs):
        local = ReplayBatchSource(plans, WORKERS).local_plans(epoch)
        fitted = [keys(b["users"], b["items"]) for plan in local for b in plan["supervised"]]
        expected = keys(data.train_train.users, data.train_train.items)
        assert torch.equal(torch.sort(torch.cat(fitted)).values, torch.sort(expected).values)
        # Training-test rows: each worker cycles over its own shard; together they are all of it.
        judged = [
            set(torch.cat([keys(b["test_users"], b["test_items"]) for b in plan["meta"]]).tolist())
            for plan in local
        ]
        assert not judged[0] & judged[1]
        all_judged = keys(data.train_test.users, data.train_test.items)
        assert judged[0] | judged[1] == set(all_judged.tolist())
        # Observed-unlabeled rows (the unlabeled rows seen in training; sampled ones never are):
        # every one in exactly one worker's meta steps, once per epoch.
        unlabeled_users = torch.cat([b["unlabeled_users"] for p in local for b in p["meta"]])
        unlabeled_items = torch.cat([b["unlabeled_items"] for p in local for b in p["meta"]])
        observed = data.seen_in_training.contains(unlabeled_users, unlabeled_items)
        used = keys(unlabeled_users[observed], unlabeled_items[observed])
        expected = keys(data.observed_unlabeled.users, data.observed_unlabeled.items)
        assert torch.equal(torch.sort(used).values, torch.sort(expected).values)


def test_summary_reports_the_run(distributed_run):
    summary, _ = distributed_run
    assert summary["workers"] == WORKERS
    assert summary["epochs_run"] == CONFIG.epochs
    assert summary["resumed_from_epoch"] is None
    assert 0.0 <= summary["test"]["auc"] <= 1.0
    assert (Path(summary["output_dir"]) / "model" / "model.pt").is_file()


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_exact_split_gives_each_rank_a_contiguous_range_and_loses_no_row(ray_session, world_size):
    import ray.data

    # Several blocks of unequal size, so block boundaries and shard boundaries differ.
    blocks = [list(range(start, stop)) for start, stop in ((0, 300), (300, 650), (650, 1003))]
    dataset = ray.data.from_items([{"row": row} for block in blocks for row in block])
    dataset = dataset.repartition(3).materialize()

    shards = ExactSplitConfig().configure({"rows": dataset}, world_size, None, None)
    rows = [
        [row for batch in shard["rows"].iter_batches(batch_format="numpy") for row in batch["row"]]
        for shard in shards
    ]
    assert [row for shard in rows for row in shard] == list(range(1003))
    assert max(map(len, rows)) - min(map(len, rows)) <= 1


def assert_same_bits(left, right, where: str) -> None:
    """Equal nested dicts/lists of tensors and plain values, bit for bit."""
    if isinstance(left, dict):
        assert left.keys() == right.keys(), where
        for key in left:
            assert_same_bits(left[key], right[key], f"{where}/{key}")
    elif isinstance(left, list | tuple):
        assert len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            assert_same_bits(a, b, f"{where}[{index}]")
    elif isinstance(left, torch.Tensor):
        assert torch.equal(left, right), where
    else:
        assert left == right, where


def test_sharded_tables_reproduce_the_replicated_run_its_checkpoint_and_model(
    dataset, distributed_run, tmp_path
):
    import ray.train

    from invlearn_ray.distributed.reporting import CHECKPOINT_FILE, shard_file_name, whole_state
    from invlearn_ray.distributed.train import run_training

    summary, _ = distributed_run
    sharded = run_training(
        dataset,
        CONFIG.replace(shard_tables=True),
        num_workers=WORKERS,
        output_dir=tmp_path / "sharded",
        max_failures=0,
    )
    assert sharded["valid"] == summary["valid"] and sharded["test"] == summary["test"]

    def load(path: Path) -> dict:
        return torch.load(path, weights_only=True, map_location="cpu")

    # The checkpoint (each rank's rows in its own file, the rest in rank 0's) holds the
    # replicated run's state, and the published model whole tables in the replicated run's
    # format, with the same bits (two ranks: same sums).
    folder = Path(sharded["last_checkpoint"])
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        [CHECKPOINT_FILE, *(shard_file_name(rank) for rank in range(WORKERS))]
    )
    states = [
        whole_state(ray.train.Checkpoint.from_directory(run["last_checkpoint"]))
        for run in (summary, sharded)
    ]
    for key in ("model", "optimizer", "best_state", "direction_log"):
        assert_same_bits(states[0][key], states[1][key], key)
    models = [load(Path(run["output_dir"]) / "model" / "model.pt") for run in (summary, sharded)]
    assert_same_bits(models[0], models[1], "model.pt")
