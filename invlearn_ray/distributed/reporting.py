"""Ray's side of :meth:`Trainer.fit`: per-epoch reports with checkpoints, and the one restore.

A Ray Train worker and a Ray Tune trial report the same way — the epoch's metrics, with rank 0
attaching the trainer's state as a checkpoint — through different functions
(``ray.train.report`` is a barrier every worker calls; ``ray.tune.report`` is the trial's
own). Both write and read one checkpoint format (:func:`restore_state`), so a restarted worker
group and a resumed study resume the same way.

A checkpoint needs no random-generator state: every draw comes from a generator keyed by
(seed, epoch, rank, stream), so the epoch and step counters *are* the RNG state.
"""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.train
import torch

from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import EpochRecord, EpochSink, Trainer

CHECKPOINT_FILE = "trainer.pt"


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
    """Report every epoch through ``report`` (``ray.train.report`` or ``ray.tune.report``);
    rank 0 attaches the trainer's state as the checkpoint, other ranks report ``None``.

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
        # Every rank takes the state: with sharded tables it is a collective (a gather).
        trainer_state = trainer.state_dict()
        if self.rank != 0:
            self.report_fn(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as directory:
            state = {
                "trainer": trainer_state,
                "train_config": trainer.config.to_dict(),
                "world_size": self.world_size,
            }
            torch.save(state, Path(directory) / CHECKPOINT_FILE)
            self.report_fn(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def restore_state(
    checkpoint: ray.train.Checkpoint | None,
    config: TrainConfig,
    world_size: int,
    device: torch.device | str = "cpu",
) -> dict[str, Any] | None:
    """The trainer state to resume from (``Trainer.fit(start=...)``), or None to start afresh.

    Raises:
        CheckpointMismatchError: the checkpoint belongs to another configuration or worker
            count (resuming it would silently train something else).
    """
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        state = torch.load(
            Path(directory) / CHECKPOINT_FILE, map_location=device, weights_only=True
        )
    if state["train_config"] != config.to_dict() or state["world_size"] != world_size:
        raise CheckpointMismatchError(
            f"checkpoint {checkpoint.path} was written by another configuration or worker count "
            f"({state['world_size']} workers); start a new run (another name or storage path)"
        )
    return state["trainer"]


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
