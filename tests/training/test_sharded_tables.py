"""Tables sharded by row (``TrainConfig.shard_tables``) on two gloo processes take the steps of
the replicated run and of one process on the joined batches, and resume exactly.

Each spawned pair trains the same configuration twice, replicated and sharded, from the same
batches; the sharded run also checkpoints after its first epoch — a gathered state, and the
per-worker files of :class:`~invlearn_ray.distributed.reporting.CheckpointSink` merged into
one folder as Ray Train merges them — and fresh sharded trainers resume from each. One process
then replays the joined batches (the approach of ``test_data_parallel_steps.py``, whose
helpers this reuses).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
import ray.train
import torch
import torch.multiprocessing as mp
from test_data_parallel_steps import BASE, JoinedSource, RecordingSource, dataset, shard
from torch.distributed.tensor import DTensor

from invlearn_ray.distributed.reporting import (
    CHECKPOINT_FILE,
    CheckpointMismatchError,
    CheckpointSink,
    restore_state,
    shard_file_name,
)
from invlearn_ray.evaluation.evaluate import score_pairs
from invlearn_ray.methods.inverse_gradient import CANDIDATES
from invlearn_ray.optim.collective import TorchDistributedCollective
from invlearn_ray.optim.sharded_tables import state_entry
from invlearn_ray.training.batches import BatchSource, local_step_counts
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import Trainer, training_rows

WORLD = 2
EPOCHS = 2
# A candidate step of 20x the learning rate (sign rule) makes GMF's meta steps on these
# batches choose each of none / direct / inverse within two epochs (checked below; 30x and
# 100x never chose inverse here).
IG = {"method": "ig", "unlabeled_source": "both", "dual_lr_ratio": 20.0, "step_rule": "sign"}
CONFIGS = {
    "none-gmf-adam": TrainConfig(method="none", backbone="gmf", **BASE),
    "ig-gmf-adam": TrainConfig(backbone="gmf", **IG, **BASE),
    "ig-gmf-lazy-adam": TrainConfig(backbone="gmf", embedding_optimizer="lazy_adam", **IG, **BASE),
    "ig-neumf-adam": TrainConfig(backbone="neumf", mlp_layers=2, **IG, **BASE),
}


def worker_trainer(config: TrainConfig, data, rank: int, record: bool = False):
    rows = shard(training_rows(config, data), rank)
    counts = torch.tensor(local_step_counts(rows, config, WORLD))
    torch.distributed.all_reduce(counts, op=torch.distributed.ReduceOp.MAX)
    steps, meta_steps = counts.tolist()
    source = BatchSource(rows, config, rank, WORLD, steps, meta_steps_per_epoch=meta_steps)
    if record:
        source = RecordingSource(source)
    trainer = Trainer(config, data, TorchDistributedCollective(), rows=rows, batch_source=source)
    return trainer, source


class MergedFolder:
    """A ``report`` function that copies each rank's checkpoint folder into one folder, as
    Ray Train does with the folders of one report; a barrier, as ``ray.train.report`` is."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, metrics: dict, checkpoint: ray.train.Checkpoint) -> None:
        shutil.copytree(checkpoint.path, self.folder, dirs_exist_ok=True)
        torch.distributed.barrier()


def scored_from_rows(trainer: Trainer) -> dict:
    """The validation scores of an epoch's row model and of the gathered whole model, and
    the rows each holds (every rank calls it)."""
    valid = trainer.data.valid
    users, items = trainer.diagnostics.pairs()
    rows, whole = trainer.epoch_scoring_model(), trainer.scoring_model()
    return {
        "rows": score_pairs(rows, valid.users, valid.items),
        "whole": score_pairs(whole, valid.users, valid.items),
        "kinds": dict(trainer.model.table_index or {}),
        "held": {name: len(getattr(rows.inner, name)) for name in trainer.model.table_index or {}},
        "scored": {
            "user": len(torch.unique(torch.cat([valid.users, users]))),
            "item": len(torch.unique(torch.cat([valid.items, items]))),
        },
    }


def train_pair(rank: int, name: str, store: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD
    )
    try:
        torch.set_num_threads(1)
        config, data = CONFIGS[name], dataset()
        replicated, _ = worker_trainer(config, data, rank)
        sharded, source = worker_trainer(config.replace(shard_tables=True), data, rank, True)
        shapes = {
            table: (
                getattr(sharded.model, table).to_local().shape[0],
                len(getattr(sharded.model, table)),
            )
            for table in sharded.model.table_names
        }
        checkpoint = Path(out_dir) / "checkpoint"
        for epoch in range(EPOCHS):
            replicated.run_epoch(epoch)
            record = sharded.run_epoch(epoch)
            if epoch == 0:
                buffer = io.BytesIO()
                torch.save(sharded.state_dict(), buffer)  # every rank: a gather
                sink = CheckpointSink(MergedFolder(checkpoint), rank, WORLD)
                sink.report(record, sharded)  # every rank: its own rows
        resumed, _ = worker_trainer(config.replace(shard_tables=True), data, rank)
        buffer.seek(0)
        resumed.load_state_dict(torch.load(buffer, weights_only=True))
        resumed.run_epoch(1)
        from_shards, _ = worker_trainer(config.replace(shard_tables=True), data, rank)
        folder = ray.train.Checkpoint.from_directory(str(checkpoint))
        from_shards.load_state_dict(restore_state(folder, from_shards.config, WORLD, rank=rank))
        from_shards.run_epoch(1)
        scored = scored_from_rows(sharded)
        states = {
            "replicated": replicated.state_dict(),
            "sharded": sharded.state_dict(),
            "resumed": resumed.state_dict(),
            "resumed_from_shards": from_shards.state_dict(),
        }
        torch.save(
            {
                **states,
                "choices": {
                    run: torch.cat(trainer.directions.log["choice"] or [torch.zeros(0)])
                    for run, trainer in (("replicated", replicated), ("sharded", sharded))
                },
                "shapes": shapes,
                "scored": scored,
                "plans": source.plans,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        torch.distributed.destroy_process_group()


def assert_same_bits(left, right, where: str = "") -> None:
    """Equal nested dicts/lists of tensors and plain values, bit for bit."""
    if isinstance(left, dict):
        assert set(left) == set(right), where
        for key in left:
            assert_same_bits(left[key], right[key], f"{where}/{key}")
    elif isinstance(left, (list, tuple)):
        assert len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            assert_same_bits(a, b, f"{where}[{index}]")
    elif isinstance(left, torch.Tensor):
        assert not isinstance(left, DTensor), f"{where}: a DTensor in a saved state"
        assert torch.equal(left, right), where
    elif key_is_timing(where):
        return
    else:
        assert left == right, where


def key_is_timing(where: str) -> bool:
    return where.endswith("_seconds")


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    """``name -> (each rank's saved results, the folder of its run)``: one spawned pair per
    configuration for every test of this module."""
    done: dict[str, Path] = {}

    def train(name: str) -> tuple[list[dict], Path]:
        if name not in done:
            out = tmp_path_factory.mktemp(name)
            mp.spawn(train_pair, args=(name, str(out / "store"), str(out)), nprocs=WORLD)
            done[name] = out
        out = done[name]
        return [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)], out

    return train


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_sharded_tables_match_replicated_workers_and_one_process(trained_pair, name):
    workers, _ = trained_pair(name)
    config = CONFIGS[name]

    # Each rank holds about half of every table.
    for rank, worker in enumerate(workers):
        for table, (held, rows) in worker["shapes"].items():
            assert held == min(rows, (rows + 1) // 2) if rank == 0 else rows - (rows + 1) // 2, (
                table
            )
    # The gathered states (model, Adam moments, best epoch's weights) agree on both ranks and
    # equal the replicated run's bit for bit: the same sums in the same order (two ranks).
    for worker in workers:
        assert_same_bits(worker["sharded"], workers[0]["sharded"], "sharded")
        assert_same_bits(worker["sharded"], worker["replicated"], "sharded vs replicated")
        # A checkpoint after epoch 0, loaded into a fresh sharded trainer, resumes exactly.
        assert_same_bits(worker["resumed"], worker["sharded"], "resumed")
        # So does the sharded checkpoint (per-rank files in one folder).
        assert_same_bits(worker["resumed_from_shards"], worker["sharded"], "from shards")
    assert torch.equal(workers[0]["choices"]["sharded"], workers[0]["choices"]["replicated"])

    replay = Trainer(config, dataset(), batch_source=JoinedSource([w["plans"] for w in workers]))
    for epoch in range(EPOCHS):
        replay.run_epoch(epoch)
    for name_, tensor in replay.model.state_dict().items():
        # One process sums a row's terms in another order than the workers' sums added up.
        torch.testing.assert_close(
            workers[0]["sharded"]["model"][name_], tensor, rtol=1e-5, atol=1e-6
        )
    if config.method == "ig":
        replay_choices = torch.cat(replay.directions.log["choice"])
        assert torch.equal(workers[0]["choices"]["sharded"], replay_choices)
        chosen = {CANDIDATES[int(c)] for c in replay_choices}
        # GMF's meta steps choose all three here; NeuMF's (checked for the step's arithmetic
        # on four tables and an MLP head) keep θ on these batches.
        assert config.backbone != "gmf" or chosen == set(CANDIDATES), chosen


@pytest.mark.parametrize(
    "changes",
    [
        {"backbone": "lightgcn"},
        {"compile": True},
        {"method": "ig", "ig_direction": "per_row"},
        {"method": "ig", "step_rule": "adam"},
        {"method": "popularity"},
    ],
)
def test_shard_tables_is_refused_where_it_cannot_apply(changes):
    with pytest.raises(ValueError, match="shard_tables cannot apply"):
        TrainConfig(shard_tables=True, **changes)


def test_shard_tables_is_refused_in_one_process():
    with pytest.raises(ValueError, match="one process"):
        Trainer(TrainConfig(shard_tables=True, **BASE), dataset())


@pytest.mark.parametrize("name", ["ig-gmf-adam", "ig-gmf-lazy-adam"])
def test_a_sharded_checkpoint_holds_each_ranks_rows_in_its_own_file(trained_pair, name):
    workers, out = trained_pair(name)
    folder = out / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [CHECKPOINT_FILE, *(shard_file_name(rank) for rank in range(WORLD))]
    )
    header = torch.load(folder / CHECKPOINT_FILE, weights_only=True)
    for rank, worker in enumerate(workers):
        held = {table: local for table, (local, whole) in worker["shapes"].items()}
        assert all(local < whole for local, whole in worker["shapes"].values())
        own = torch.load(folder / shard_file_name(rank), weights_only=True)
        assert (own["shard"]["rank"], own["shard"]["world_size"]) == (rank, WORLD)
        paths = own["shard"]["paths"]
        # The tables, the best epoch's tables, and two moments per table.
        assert {path for path in paths if path[0] != "optimizer"} == {
            (part, table) for part in ("model", "best_state") for table in held
        }
        assert sum(path[0] == "optimizer" for path in paths) == 2 * len(held)
        for path, rows in zip(paths, own["rows"], strict=True):
            # Per-rank local shard shapes: this rank's rows of a table, never a whole table.
            if path[0] == "optimizer":
                assert len(rows) in held.values(), path
            else:
                assert len(rows) == held[path[1]], path
            # Rank 0's shared file holds none of them.
            assert state_entry(header["trainer"], path) is None, path


@pytest.mark.parametrize("name", ["ig-gmf-adam", "ig-neumf-adam"])
def test_an_epoch_scores_the_rows_it_reads_as_the_whole_model_does(trained_pair, name):
    workers, _ = trained_pair(name)
    for worker in workers:
        scored = worker["scored"]
        # GMF scores through its factors, NeuMF through its forward: both bit for bit.
        assert len(scored["rows"]) and torch.equal(scored["rows"], scored["whole"])
        # It holds the rows of the ids this worker scores, not the tables (on this tiny
        # data the diagnostic sample reads nearly every row).
        assert scored["held"] == {
            table: scored["scored"][kind] for table, kind in scored["kinds"].items()
        }


def test_a_sharded_checkpoint_refuses_another_worker_count_in_one_line(trained_pair):
    _, out = trained_pair("ig-gmf-lazy-adam")
    folder = ray.train.Checkpoint.from_directory(str(out / "checkpoint"))
    config = CONFIGS["ig-gmf-lazy-adam"].replace(shard_tables=True)
    expected = r"\(2 workers, not 3\); resume with its"
    with pytest.raises(CheckpointMismatchError, match=expected) as error:
        restore_state(folder, config, world_size=3, rank=2)
    assert "\n" not in str(error.value)
