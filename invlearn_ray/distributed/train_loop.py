"""The per-worker function of data-parallel training on Ray Train (method.md §4).

Every worker runs :func:`train_loop_per_worker` with the same ``config`` dict
(:func:`setup_worker` does steps 0–3):

0. set torch's intra-op threads to the node's cores divided by the workers on the node
   (:func:`intra_op_threads`): Ray exports ``OMP_NUM_THREADS`` from the worker's CPU
   reservation (1 for the default 0.5 CPU), which leaves a lone worker on one core, and the
   torch default (every core per worker) oversubscribes the cores once several workers share
   them — both measured slower on this 2-core machine;
1. load the dataset's small, global parts with ``load_dataset`` (the seen-item index,
   observed-unlabeled rows) and keep only this worker's users' validation and test rows
   (``evaluation_shard``): each evaluation scores the worker's users and combines the shards'
   statistics with collectives, so every rank gets the one-process metrics and early-stopping
   decisions agree;
2. materialise *its shard* of ``train_train`` and ``train_test`` from
   ``ray.train.get_dataset_shard`` into tensors once, sorted by input row (batches are then
   built by index, ~5x faster than re-reading a Ray Dataset every epoch — ray_notes.md);
   observed-unlabeled rows are global, so each worker takes every ``world_size``-th of them;
3. agree on step counts: every step holds collectives, so all workers take the maximum of
   their local supervised and meta step counts (a worker that runs out of rows takes empty
   batches; steps reduce (sum, count) pairs, so the global means stay exact);
4. :meth:`Trainer.fit` — the same loop as one process — from the state of
   ``ray.train.get_checkpoint()`` when Ray Train restarted the group
   (:func:`~invlearn_ray.distributed.reporting.restore_state`), reporting through a
   :class:`~invlearn_ray.distributed.reporting.CheckpointSink` on ``ray.train.report`` (a
   barrier; rank 0 attaches the checkpoint, or with sharded tables every rank its rows), then
   scoring its shard of the test users;
5. rank 0 writes the run's outputs and returns the summary (``Result.return_value``). A run
   whose loss or weights leave their bounds (``TrainingDiverged``) stops on every worker at the
   same epoch — each judges the global loss and identical weights — and writes nothing;
   :func:`run_summary` raises it on the driver.

Parameters stay identical on every worker without a broadcast: the dual-loss gradient, the
three candidates' (loss sum, row count) pairs and every final gradient are reduced — embedding
tables as the rows each step touched (:class:`~invlearn_ray.optim.gradients.WorkerMean`) — and
every worker takes the same argmin
(:class:`~invlearn_ray.methods.inverse_gradient.InverseGradient`). With
``TrainConfig.shard_tables`` each worker holds only its rows of the tables (DTensor
``Shard(0)`` over Ray's process group, :mod:`~invlearn_ray.optim.sharded_tables`); the heads
stay identical, each worker checkpoints its own rows in its own file (rank 0 also the rest,
:class:`~invlearn_ray.distributed.reporting.CheckpointSink`) and reads only those back, and the
published model holds whole tables, gathered once after training.

Test-only switches (keys starting with ``_test_``, never environment variables, so nothing
can leak into a real run): ``_test_fail_once_at_epoch`` / ``_test_fail_rank`` /
``_test_fail_marker`` make one worker raise once at the start of an epoch (the marker file
records that it did); ``_test_record_batches_dir`` saves each worker's epoch plans.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray.data
import ray.train
import ray.train.torch
import torch
from ray.data import DataIterator, Dataset
from ray.train import DataConfig
from ray.train.torch import TorchTrainer

from invlearn_ray import storage
from invlearn_ray.data import canonical as cn
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.data.recdata import Interactions, RecData
from invlearn_ray.distributed.reporting import CheckpointSink, FailOnceSink, restore_state
from invlearn_ray.evaluation.evaluate import evaluation_shard
from invlearn_ray.methods.registry import method_spec
from invlearn_ray.optim.collective import TorchDistributedCollective
from invlearn_ray.training.batches import BatchSource, EpochPlan, TrainingRows, local_step_counts
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.run_folder import write_run
from invlearn_ray.training.trainer import EpochSink, Trainer, TrainingDiverged

DIVERGED = "diverged"
"""Key of rank 0's return value when training diverged (its value: the one-line reason)."""
SHARDED_SPLITS = ("train_train", "train_test")
"""Splits read through Ray Data and divided among workers by row range. Validation and test
are loaded from the folder and cut by user (``evaluation_shard``); the seen-item index is
global, so each worker loads it whole."""
SHARD_COLUMNS = (cn.ROW, cn.USER, cn.ITEM, cn.LABEL)


class ExactSplitConfig(DataConfig):
    """Give worker ``k`` the ``k``-th of ``world_size`` contiguous, near-equal row ranges of
    every dataset: no row lost, and the same rows on every attempt.

    Ray Train's default split (``streaming_split(equal=True)``) drops up to ``world_size - 1``
    rows to equalise shards and deals blocks out in completion order, so a restarted worker
    group may see other rows — exact resumption needs the same ones. Here each dataset is
    materialised in file order and cut with ``split_at_indices`` at ``round(k·n/world_size)``:
    the shards depend only on the rows, not on the Parquet layout or on timing. It also needs
    no streaming coordinator actor per dataset: on this 2-core machine, reading two tiny
    splits through ``streaming_split`` (read and repartition run for the workers) took ~21 s
    of each worker's start, the pre-cut pieces ~6 s.
    """

    def configure(
        self,
        datasets: dict[str, Dataset],
        world_size: int,
        worker_handles: Any,
        worker_node_ids: Any,
        **kwargs: Any,
    ) -> list[dict[str, DataIterator]]:
        output: list[dict[str, DataIterator]] = [{} for _ in range(world_size)]
        for name, dataset in datasets.items():
            dataset = dataset.copy(dataset)
            dataset.set_name(name)
            dataset.context.execution_options.preserve_order = True
            materialized = dataset.materialize()
            if world_size == 1:  # split_at_indices needs at least one cut
                output[0][name] = materialized.iterator()
                continue
            n_rows = materialized.count()
            bounds = [round(rank * n_rows / world_size) for rank in range(1, world_size)]
            for rank, piece in enumerate(materialized.split_at_indices(bounds)):
                output[rank][name] = piece.iterator()
        return output


def read_shard_dataset(dataset_path: storage.Location, split: str) -> Dataset:
    """A labeled split as a materialised Ray Dataset, rows in file order.

    Materialised once, on the driver, before the workers hold their CPUs: the read cannot be
    starved by the workers (the 2-CPU hang of ray_notes.md), and a restarted worker group
    re-splits the same blocks instead of re-reading Parquet. File order (``preserve_order``)
    makes :class:`ExactSplitConfig`'s row ranges the same rows on every run.
    """
    filesystem, path = storage.resolve(storage.join(dataset_path, split))
    dataset = ray.data.read_parquet(path, filesystem=filesystem)
    dataset.context.execution_options.preserve_order = True
    return dataset.select_columns(list(SHARD_COLUMNS)).materialize()


class RecordingBatchSource:
    """A :class:`BatchSource` that also saves each epoch's plan (test switch): the
    equivalence test replays the workers' local batches, joined, in one process."""

    def __init__(self, source: BatchSource, directory: Path, rank: int) -> None:
        self.source = source
        self.directory = directory
        self.rank = rank
        directory.mkdir(parents=True, exist_ok=True)

    def plan(self, epoch: int, with_meta: bool = True) -> EpochPlan:
        plan = self.source.plan(epoch, with_meta=with_meta)
        torch.save(plan_to_dict(plan), self.directory / plan_file_name(epoch, self.rank))
        return plan


def plan_file_name(epoch: int, rank: int) -> str:
    return f"plan_epoch{epoch:04d}_rank{rank}.pt"


def plan_to_dict(plan: EpochPlan) -> dict[str, list[dict[str, torch.Tensor]]]:
    """An epoch plan as nested dicts of CPU tensors (``torch.load(weights_only=True)``)."""

    def tensors(batch: Any) -> dict[str, torch.Tensor]:
        return {key: value.cpu() for key, value in vars(batch).items() if value is not None}

    return {
        "supervised": [tensors(batch) for batch in plan.supervised],
        "meta": [tensors(batch) for batch in plan.meta],
    }


def shard_interactions(iterator: DataIterator, device: torch.device) -> Interactions:
    """This worker's shard of a labeled split as tensors, in input-row order.

    Sorting by ``row`` makes the tensors independent of the order blocks arrived in.
    """
    tables = list(iterator.iter_batches(batch_format="pyarrow", batch_size=None))
    tables = [table.select(list(SHARD_COLUMNS)) for table in tables if table.num_rows]
    if not tables:
        return Interactions.empty().to(device)
    table = pa.concat_tables(tables).sort_by(cn.ROW)

    def column(name: str, dtype: torch.dtype) -> torch.Tensor:
        values = table.column(name).to_numpy(zero_copy_only=False).copy()
        return torch.from_numpy(values).to(dtype=dtype, device=device)

    return Interactions(
        users=column(cn.USER, torch.int64),
        items=column(cn.ITEM, torch.int64),
        labels=column(cn.LABEL, torch.float32),
    )


def worker_rows(
    config: TrainConfig,
    data: RecData,
    train_train: Interactions,
    train_test: Interactions,
    rank: int,
    world_size: int,
) -> TrainingRows:
    """This worker's :class:`TrainingRows`, mirroring ``training_rows`` of one process: IG
    (and ``none_ig_steps``) fits training-train and steps on training-test, other methods fit
    both."""
    if method_spec(config.method).ig_batches:
        labeled, judged = train_train, train_test
    else:
        labeled = Interactions(
            torch.cat([train_train.users, train_test.users]),
            torch.cat([train_train.items, train_test.items]),
            torch.cat([train_train.labels, train_test.labels]),
        )
        judged = Interactions.empty().to(labeled.users.device)
    observed = data.observed_unlabeled
    return TrainingRows(
        labeled=labeled,
        train_test=judged,
        observed_users=observed.users[rank::world_size],
        observed_items=observed.items[rank::world_size],
        seen=data.seen_in_training,
    )


def agreed_step_counts(
    rows: TrainingRows, config: TrainConfig, world_size: int, device: torch.device
) -> tuple[int, int]:
    """The maximum over workers of each local ``(supervised, meta)`` step count."""
    counts = torch.tensor(local_step_counts(rows, config, world_size), device=device)
    torch.distributed.all_reduce(counts, op=torch.distributed.ReduceOp.MAX)
    supervised, meta = counts.tolist()
    return int(supervised), int(meta)


def run_summary(return_value: dict[str, Any] | None) -> dict[str, Any]:
    """A Ray Train run's summary from rank 0's return value.

    Raises:
        TrainingDiverged: the run stopped because training diverged (nothing was written).
    """
    if return_value is not None and DIVERGED in return_value:
        raise TrainingDiverged(return_value[DIVERGED])
    return dict(return_value or {})


def intra_op_threads(local_workers: int, cores: int | None = None) -> int:
    """Torch intra-op threads for one of ``local_workers`` workers sharing a node's ``cores``
    (default: the CPUs this process may run on): an equal share, at least one."""
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, cores // max(1, local_workers))


@dataclass
class Worker:
    """What :func:`setup_worker` builds: one worker's data, trainer and place in the group."""

    config: TrainConfig
    data: RecData
    trainer: Trainer
    collective: TorchDistributedCollective
    rank: int
    world_size: int


def setup_worker(config: dict[str, Any]) -> Worker:
    """Steps 0–3 of the module docstring: threads, data, this worker's shards, agreed step
    counts and the trainer. Also used by ``benchmarks/data_parallel.py`` to time the loop."""
    context = ray.train.get_context()
    torch.set_num_threads(intra_op_threads(context.get_local_world_size()))
    train_config = TrainConfig.from_dict(config["train"])
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    # The full validation and test rows are dropped here: a worker holds its users' share.
    data = evaluation_shard(load_dataset(config["dataset"], device), rank, world_size)
    # Every worker reads its shards in the same order: a streaming split starts with a barrier.
    train_train = shard_interactions(ray.train.get_dataset_shard("train_train"), device)
    train_test = shard_interactions(ray.train.get_dataset_shard("train_test"), device)
    rows = worker_rows(train_config, data, train_train, train_test, rank, world_size)
    steps, meta_steps = agreed_step_counts(rows, train_config, world_size, device)
    batches: BatchSource | RecordingBatchSource = BatchSource(
        rows,
        train_config,
        rank=rank,
        world_size=world_size,
        steps_per_epoch=steps,
        meta_steps_per_epoch=meta_steps,
    )
    if config.get("_test_record_batches_dir"):
        batches = RecordingBatchSource(batches, Path(config["_test_record_batches_dir"]), rank)
    collective = TorchDistributedCollective()
    trainer = Trainer(train_config, data, collective, rows=rows, batch_source=batches)
    return Worker(train_config, data, trainer, collective, rank, world_size)


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Train one configuration data-parallel; see the module docstring.

    Args:
        config: ``dataset`` (a built dataset's location), ``train`` (a ``TrainConfig``
            dict), ``output_dir`` (the run folder: a local path or an object-store URI, which
            rank 0 uploads to from its node), optional ``staging_dir`` (where rank 0 writes
            a local run's files when the driver publishes them to ``output_dir`` afterwards),
            optional ``score_test`` (default True; False for a tuning trial) and optional
            ``_test_*`` switches.

    Returns:
        On rank 0, the run's summary (``write_run_outputs``), or ``{DIVERGED: message}`` when
        training diverged (read it with :func:`run_summary`); None on other ranks.
    """
    worker = setup_worker(config)
    trainer, rank, world_size = worker.trainer, worker.rank, worker.world_size
    start = restore_state(
        ray.train.get_checkpoint(), worker.config, world_size, trainer.device, rank
    )
    sink: EpochSink = CheckpointSink(ray.train.report, rank, world_size)
    if "_test_fail_once_at_epoch" in config:
        sink = FailOnceSink(sink, config, rank)
    try:
        result = trainer.fit(sink, start, score_test=config.get("score_test", True))
    except TrainingDiverged as error:
        # Every worker judged the same global loss and identical weights, so all stop at
        # this epoch. Returning, not raising: Ray Train would restart the group from the
        # last checkpoint, and it would diverge again.
        return {DIVERGED: str(error)} if rank == 0 else None
    if rank != 0:
        return None
    staging = config.get("staging_dir")
    return write_run(
        result,
        config["output_dir"],
        config["dataset"],
        worker.data,
        workers=world_size,
        resumed_from_epoch=None if start is None else start["next_epoch"],
        staging=Path(staging) if staging else None,
    )


def build_torch_trainer(
    dataset_path: storage.Location,
    loop_config: dict[str, Any],
    *,
    num_workers: int,
    storage_path: str,
    run_name: str,
    cpus_per_worker: float = 0.5,
    use_gpu: bool = False,
    max_failures: int = 1,
    num_to_keep: int = 2,
    callbacks: Sequence[Any] = (),
) -> TorchTrainer:
    """The one ``TorchTrainer`` of this project: :func:`train_loop_per_worker` on the
    dataset's labeled training splits (read once, cut by :class:`ExactSplitConfig`), for
    ``run_training`` and for Tune trials (which add ``TuneReportCallback``).

    Args:
        loop_config: the worker config (see :func:`train_loop_per_worker`); ``dataset`` is
            set from ``dataset_path``.
        storage_path, run_name: where Ray Train keeps the run's checkpoints (a rerun with the
            same two resumes from them).
        cpus_per_worker: fractions leave room for Ray Data's reads (ray_notes.md).
        max_failures: worker-group restarts, each resuming from the last checkpoint.
        num_to_keep: checkpoints kept (the newest ones).
    """
    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**loop_config, "dataset": storage.absolute(dataset_path)},
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            callbacks=list(callbacks),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=num_to_keep),
        ),
        datasets={split: read_shard_dataset(dataset_path, split) for split in SHARDED_SPLITS},
        dataset_config=ExactSplitConfig(),
    )
