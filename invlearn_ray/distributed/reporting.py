"""Ray's side of :meth:`Trainer.fit`: per-epoch reports with checkpoints, and the one restore.

A Ray Train worker and a Ray Tune trial report the same way — the epoch's metrics, with rank 0
attaching the trainer's state as a checkpoint — through different functions
(``ray.train.report`` is a barrier every worker calls; ``ray.tune.report`` is the trial's
own). Both write and read one checkpoint format (:func:`restore_state`), so a restarted worker
group and a resumed study resume the same way.

With sharded tables (``TrainConfig.shard_tables``) a checkpoint is written by every worker:
each saves its rows of the tables, of the best epoch's tables and of their optimizer moments
in its own file (:func:`shard_file_name`), rank 0 also saves the rest (heads, counters,
history) in :data:`CHECKPOINT_FILE`, and every worker reports its folder. Ray Train (2.60)
gives the workers of one report the same checkpoint folder name and copies each folder's
files into it, so the files must have distinct names; the checkpoint is registered once every
worker has reported. No worker ever holds a whole table for a checkpoint, and on restore each
reads only :data:`CHECKPOINT_FILE` and its own file. The per-worker files are cut for one
worker count: resuming with another is refused (as for unsharded runs, whose replay is keyed
by rank and worker count anyway).

A checkpoint needs no random-generator state: every draw comes from a generator keyed by
(seed, epoch, rank, stream), so the epoch and step counters *are* the RNG state.
"""

from __future__ import annotations

import io
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray.train
import torch

from invlearn_ray.optim.sharded_tables import state_entry, with_entries
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import EpochRecord, EpochSink, Trainer

CHECKPOINT_FILE = "trainer.pt"


def shard_file_name(rank: int) -> str:
    """The file of a sharded checkpoint holding worker ``rank``'s rows."""
    return f"shard_rank{rank:05d}.pt"


class CheckpointMismatchError(RuntimeError):
    """A checkpoint was written by another configuration or worker count."""


EPOCHS_DONE = "epochs_done"
"""In every report: epochs finished (``epoch + 1``), ASHA's clock. Not Tune's
``training_iteration``, which counts reports: after a lost node Tune can resume a trial from
the checkpoint before its last report and count that epoch twice."""


def epoch_metrics(record: EpochRecord, trainer: Trainer) -> dict[str, float]:
    """One epoch's report: ``EpochRecord.flat()`` (``valid/gauc``, ...), the kept epoch and
    the epochs done."""
    return {**record.flat(), "best_epoch": trainer.best_epoch, EPOCHS_DONE: record.epoch + 1}


class CheckpointSink(EpochSink):
    """Report every epoch through ``report`` (``ray.train.report`` or ``ray.tune.report``)
    with a checkpoint: rank 0's folder of the trainer's state, other ranks ``None`` — or, with
    sharded tables, every rank's folder of its rows (see the module docstring).

    Args:
        report: ``report(metrics, checkpoint=...)``.
        rank, world_size: this worker's place (0 and 1 for a trial in its own process).
    """

    def __init__(self, report: Callable[..., None], rank: int = 0, world_size: int = 1) -> None:
        self.report_fn = report
        self.rank = rank
        self.world_size = world_size

    def report(self, record: EpochRecord, trainer: Trainer) -> None:
        metrics = epoch_metrics(record, trainer)
        if trainer.config.shard_tables:
            self._report_shards(metrics, trainer)
            return
        if self.rank != 0:
            self.report_fn(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as directory:
            state = self._header(trainer.state_dict(), trainer)
            torch.save(state, Path(directory) / CHECKPOINT_FILE)
            self.report_fn(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))

    def _report_shards(self, metrics: dict[str, float], trainer: Trainer) -> None:
        """Every rank writes its rows, rank 0 the rest: memory per rank, its share of the state
        (the files hold the live tensors; nothing is gathered or copied)."""
        state = trainer.state_dict(whole_tables=False)
        shard = state.pop("shard")
        paths = shard["paths"]
        rows = [state_entry(state, path) for path in paths]
        with tempfile.TemporaryDirectory() as directory:
            torch.save({"shard": shard, "rows": rows}, Path(directory) / shard_file_name(self.rank))
            if self.rank == 0:
                rest = with_entries(state, paths, [None] * len(paths))
                header = {**self._header(rest, trainer), "sharded": True}
                torch.save(header, Path(directory) / CHECKPOINT_FILE)
            self.report_fn(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))

    def _header(self, trainer_state: dict[str, Any], trainer: Trainer) -> dict[str, Any]:
        return {
            "trainer": trainer_state,
            "train_config": trainer.config.to_dict(),
            "world_size": self.world_size,
        }


def restore_state(
    checkpoint: ray.train.Checkpoint | None,
    config: TrainConfig,
    world_size: int,
    device: torch.device | str = "cpu",
    rank: int = 0,
) -> dict[str, Any] | None:
    """The trainer state to resume from (``Trainer.fit(start=...)``), or None to start afresh.
    From a sharded checkpoint, worker ``rank``'s rows and the shared rest.

    Raises:
        CheckpointMismatchError: the checkpoint belongs to another configuration or worker
            count (resuming it would silently train something else).
    """
    if checkpoint is None:
        return None
    state = _load(checkpoint, CHECKPOINT_FILE, device)
    if state["train_config"] != config.to_dict() or state["world_size"] != world_size:
        raise CheckpointMismatchError(
            f"checkpoint {checkpoint.path} was written by another configuration or worker count "
            f"({state['world_size']} workers, not {world_size}); resume with its configuration "
            "and worker count, or start a new run (another name or storage path)"
        )
    if not state.get("sharded"):
        return state["trainer"]
    own = _load(checkpoint, shard_file_name(rank), device)
    trainer_state = with_entries(state["trainer"], own["shard"]["paths"], own["rows"])
    return {**trainer_state, "shard": own["shard"]}


def whole_state(checkpoint: ray.train.Checkpoint) -> dict[str, Any]:
    """A checkpoint's trainer state with whole tables — a sharded one's rows joined in rank
    order (``Shard(0)`` rows are contiguous) — for inspecting it in one process. Memory: the
    whole state; training never calls it."""
    state = _load(checkpoint, CHECKPOINT_FILE, "cpu")
    if not state.get("sharded"):
        return state["trainer"]
    shards = [
        _load(checkpoint, shard_file_name(rank), "cpu") for rank in range(state["world_size"])
    ]
    paths = shards[0]["shard"]["paths"]
    joined = [torch.cat(parts) for parts in zip(*(own["rows"] for own in shards), strict=True)]
    return with_entries(state["trainer"], paths, joined)


def _load(checkpoint: ray.train.Checkpoint, name: str, device: torch.device | str) -> Any:
    """One file of ``checkpoint``, read where it is stored (``as_directory`` would download
    every worker's files to each worker). A remote file is read whole first: ``torch.load``
    on a remote file object would make a request per read."""
    path = f"{checkpoint.path}/{name}"
    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return torch.load(path, map_location=device, weights_only=True)
    with checkpoint.filesystem.open_input_stream(path) as stream:
        data = io.BytesIO(stream.readall())
    return torch.load(data, map_location=device, weights_only=True)


class InjectedFailure(RuntimeError):
    """Raised by the ``_test_fail_once_at_epoch`` switch; never raised in a real run."""


class FailOnceSink(EpochSink):
    """Test switch around another sink: one rank raises once, at the start of one epoch; the
    marker file (created with ``"x"``, so exactly one attempt wins) records that it did."""

    def __init__(self, inner: EpochSink, switches: dict[str, Any], rank: int) -> None:
        self.inner = inner
        self.epoch = switches["_test_fail_once_at_epoch"]
        self.fail_rank = switches.get("_test_fail_rank", 1)
        self.marker = switches["_test_fail_marker"]
        self.kill = switches.get("_test_kill", False)
        self.rank = rank

    def start_epoch(self, epoch: int) -> None:
        self.inner.start_epoch(epoch)
        if epoch != self.epoch or self.rank != self.fail_rank:
            return
        try:
            with open(self.marker, "x") as marker:
                marker.write(f"failed at epoch {epoch} on rank {self.rank}, pid {os.getpid()}\n")
        except FileExistsError:
            return
        if self.kill:  # as the OOM killer or a lost node would: no exception, no clean-up
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFailure(f"test switch: rank {self.rank} fails at the start of epoch {epoch}")

    def report(self, record: EpochRecord, trainer: Trainer) -> None:
        self.inner.report(record, trainer)
