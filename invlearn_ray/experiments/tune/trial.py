"""One tuning trial: Tune's trainable, run in the trial's process (or driving Ray Train).

A trial trains the configuration its parameters draw and reports the validation metrics after
every epoch:

* with ``workers=0``: the plain :class:`~invlearn_ray.training.trainer.Trainer` inside the trial
  process, one ``tune.report`` per epoch with the trainer's state as the checkpoint. Each Ray
  Train ``fit()`` costs ~10–19 s of start-up on this machine, so sweeps of small datasets skip it;
* with ``workers=N>=1``: a Ray Train run of N data-parallel workers (the project's
  ``train_loop_per_worker``), its per-epoch ``ray.train.report`` forwarded to Tune by
  ``TuneReportCallback`` (the Tune-over-Train pattern of ray_notes.md). The trial process itself
  holds only ``driver_cpus``; the workers reserve their own CPUs.

A finished trial writes its selected model, direction log and history to its own folder (no
test scoring: a trial is a candidate).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.train
import torch
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from invlearn_ray.data.loading import load_dataset
from invlearn_ray.distributed.train_loop import (
    SHARDED_SPLITS,
    ExactSplitConfig,
    read_shard_dataset,
    run_summary,
    train_loop_per_worker,
)
from invlearn_ray.experiments.spaces import StudySpace
from invlearn_ray.models.checkpoint import save_model
from invlearn_ray.training.run_folder import (
    DIRECTION_LOG_FILE,
    MODEL_DIR,
    finite_or_none,
    read_metrics,
)
from invlearn_ray.training.trainer import EpochRecord, Trainer

TRIAL_CHECKPOINT = "trainer.pt"
HISTORY_FILE = "history.json"


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its sampled parameters (shipped once via the object
    store with ``tune.with_parameters``)."""

    space: StudySpace
    dataset: str
    outputs_root: str
    workers: int
    cpus_per_worker: float
    torch_threads: int
    reported_epochs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Epochs each trial of a resumed study had reported to Tune before (read by the driver
    through ``Tuner.restore(...).get_results()``); empty for a new study."""

    def trial_outputs(self, trial_id: str) -> Path:
        """A trial's own folder. Not Tune's ``get_trial_dir()``: that is a staging folder in
        Ray's session directory, which Tune does not copy to the study's storage."""
        return Path(self.outputs_root) / trial_id


def run_trial(params: dict[str, Any], context: TrialContext) -> None:
    """Tune's trainable: train the configuration ``params`` draws, reporting every epoch."""
    config = context.space.trial_config(params)
    torch.set_num_threads(context.torch_threads)
    outputs = context.trial_outputs(tune.get_context().get_trial_id())
    if context.workers > 0:
        _trial_on_ray_train(config, context, outputs)
        return
    data = load_dataset(context.dataset)
    trainer = Trainer(config, data)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a resumed study: continue after the last reported epoch
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / TRIAL_CHECKPOINT, weights_only=True)
        trainer.load_state_dict(state)
    while not trainer.should_stop:
        record = trainer.run_epoch(trainer.next_epoch)
        with tempfile.TemporaryDirectory() as directory:
            torch.save(trainer.state_dict(), Path(directory) / TRIAL_CHECKPOINT)
            tune.report(
                report_metrics(record, trainer.best_epoch),
                checkpoint=tune.Checkpoint.from_directory(directory),
            )
    write_trial_outputs(trainer, outputs, context.dataset)


def report_metrics(record: EpochRecord, best_epoch: int) -> dict[str, float]:
    """One epoch's Tune report: ``EpochRecord.flat()`` (``valid/gauc``, ...) + the kept epoch."""
    return {**record.flat(), "best_epoch": best_epoch}


def write_trial_outputs(trainer: Trainer, output_dir: Path, dataset: str) -> None:
    """A finished trial's selected model, direction log and history — no test scoring: a
    trial is a candidate, and test is scored once, for the chosen configuration."""
    output_dir.mkdir(parents=True, exist_ok=True)
    save_model(
        trainer.selected_model(),
        output_dir / MODEL_DIR,
        metadata={
            "method": trainer.config.method,
            "best_epoch": trainer.best_epoch,
            "dataset": dataset,
            "train_config": trainer.config.to_dict(),
        },
    )
    torch.save(
        {
            "direction_log": trainer.directions.tensors(),
            "weight_histograms": dict(trainer.diagnostics.weight_histograms),
        },
        output_dir / DIRECTION_LOG_FILE,
    )
    history = [record.flat() for record in trainer.history]
    (output_dir / HISTORY_FILE).write_text(json.dumps(finite_or_none(history), indent=2) + "\n")


def _trial_on_ray_train(config, context: TrialContext, outputs: Path) -> None:
    """The trial as a Ray Train run whose per-epoch reports reach Tune.

    Builds the same ``TorchTrainer`` as ``invlearn_ray.distributed.train.run_training`` plus
    ``TuneReportCallback`` (``run_training`` takes no callbacks). Train keeps its checkpoints
    in the trial's folder, so a resumed trial's Train run restores from its last one.

    An interruption can fall between a Train checkpoint and the delivery of its report to
    Tune: the resumed run then starts after an epoch Tune never saw. Those epochs are reported
    after ``fit()`` from the run's history, so Tune (and selection) see every epoch once.
    """
    dataset = Path(context.dataset)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "dataset": str(dataset),
            "train": config.to_dict(),
            "output_dir": str(outputs),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=context.workers,
            resources_per_worker={"CPU": context.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name="train",
            storage_path=str(outputs),
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=0),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
        datasets={split: read_shard_dataset(dataset, split) for split in SHARDED_SPLITS},
        dataset_config=ExactSplitConfig(),
    )
    reported_before = context.reported_epochs.get(tune.get_context().get_trial_id(), ())
    run_summary(trainer.fit().return_value)  # a diverged run fails the trial with its reason
    summary = read_metrics(outputs)
    missing = missing_reports(summary["history"], reported_before, summary["resumed_from_epoch"])
    for record in missing:
        tune.report(record)


def missing_reports(
    history: list[dict[str, Any]],
    reported_before: Collection[int],
    resumed_from_epoch: int | None,
) -> list[dict[str, Any]]:
    """Epochs a resumed Train run finished in an earlier attempt whose reports Tune never got.

    Args:
        history: the run's per-epoch records (``metrics.json``).
        reported_before: the epochs Tune recorded for the trial in earlier attempts.
        resumed_from_epoch: the epoch the last attempt resumed at (None: it started afresh,
            and reported every epoch itself).
    """
    if resumed_from_epoch is None:
        return []
    seen = set(reported_before)
    return [
        record
        for record in history
        if int(record["epoch"]) < resumed_from_epoch and int(record["epoch"]) not in seen
    ]
