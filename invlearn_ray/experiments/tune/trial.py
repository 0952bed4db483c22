"""One tuning trial: Tune's trainable, run in the trial's process (or driving Ray Train).

A trial trains the configuration its parameters draw and reports the validation metrics after
every epoch, through the same loop as any run (:meth:`Trainer.fit`):

* with ``workers=0``: the trainer inside the trial process, reporting to Tune with the
  trainer's state as the checkpoint. Each Ray Train ``fit()`` costs ~10–19 s of start-up on
  this machine, so sweeps of small datasets skip it;
* with ``workers=N>=1``: a Ray Train run of N data-parallel workers (the project's one
  ``TorchTrainer``, :func:`~invlearn_ray.distributed.train_loop.build_torch_trainer`), its
  per-epoch ``ray.train.report`` forwarded to Tune by ``TuneReportCallback`` (the
  Tune-over-Train pattern of ray_notes.md). The trial process itself holds only
  ``driver_cpus``; the workers reserve their own CPUs.

A finished trial writes a run folder (:func:`~invlearn_ray.training.run_folder.write_run`)
without test scores: a trial is a candidate. Its folder is a location (an object-store URI on
a multi-node cluster): the trial writes it from whichever node it ran on.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import torch
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from invlearn_ray import storage
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.distributed.reporting import (
    EPOCHS_DONE,
    CheckpointSink,
    FailOnceSink,
    restore_state,
)
from invlearn_ray.distributed.train_loop import build_torch_trainer, run_summary
from invlearn_ray.experiments.spaces import StudySpace
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.run_folder import read_metrics, write_run
from invlearn_ray.training.trainer import EpochSink, Trainer, TrainingDiverged

DIVERGED_FILE = "diverged.txt"
"""In a trial's folder: the one-line reason it diverged (a restarted trial fails with it)."""


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
    test_switches: dict[str, Any] = field(default_factory=dict)
    """Test-only ``_test_fail_*`` switches of :class:`~invlearn_ray.distributed.reporting.
    FailOnceSink` (``_test_kill``: die by SIGKILL, as under Ray's memory monitor)."""

    def trial_outputs(self, trial_id: str) -> str:
        """A trial's own folder (a location). Not Tune's ``get_trial_dir()``: that is a staging
        folder in Ray's session directory on the trial's node, which Tune does not copy to the
        study's storage."""
        return storage.join(self.outputs_root, trial_id)


def run_trial(params: dict[str, Any], context: TrialContext) -> None:
    """Tune's trainable: train the configuration ``params`` draws, reporting every epoch.

    A trial that diverged fails again at once when Tune restarts it (``trial_retries`` are for
    lost processes and nodes): divergence is a property of its configuration, and the retries
    would repeat the same epochs to the same end.
    """
    config = context.space.trial_config(params)
    torch.set_num_threads(context.torch_threads)
    outputs = context.trial_outputs(tune.get_context().get_trial_id())
    diverged = storage.join(outputs, DIVERGED_FILE)
    if storage.is_file(diverged):
        raise TrainingDiverged(storage.read_text(diverged))
    try:
        _train_trial(config, context, outputs)
    except TrainingDiverged as error:
        storage.write_text(diverged, str(error))
        raise


def _train_trial(config: TrainConfig, context: TrialContext, outputs: str) -> None:
    if context.workers > 0:
        _trial_on_ray_train(config, context, outputs)
        return
    data = load_dataset(context.dataset)
    start = restore_state(tune.get_checkpoint(), config, world_size=1)
    sink: EpochSink = CheckpointSink(tune.report)
    if "_test_fail_once_at_epoch" in context.test_switches:
        sink = FailOnceSink(sink, context.test_switches, rank=0)
    result = Trainer(config, data).fit(sink, start, score_test=False)
    resumed_from_epoch = None if start is None else start["next_epoch"]
    write_run(
        result, outputs, context.dataset, data, workers=0, resumed_from_epoch=resumed_from_epoch
    )


def _trial_on_ray_train(config: TrainConfig, context: TrialContext, outputs: str) -> None:
    """The trial as a Ray Train run whose per-epoch reports reach Tune.

    Train keeps its checkpoints in the trial's folder, so a resumed trial's Train run restores
    from its last one. An interruption can fall between a Train checkpoint and the delivery of
    its report to Tune: the resumed run then starts after an epoch Tune never saw. Those
    epochs are reported after ``fit()`` from the run's history, so Tune (and selection) see
    every epoch once.
    """
    trainer = build_torch_trainer(
        context.dataset,
        {"train": config.to_dict(), "output_dir": outputs, "score_test": False},
        num_workers=context.workers,
        storage_path=outputs,
        run_name="train",
        cpus_per_worker=context.cpus_per_worker,
        max_failures=0,
        num_to_keep=1,
        callbacks=[TuneReportCallback()],
    )
    reported_before = context.reported_epochs.get(tune.get_context().get_trial_id(), ())
    run_summary(trainer.fit().return_value)  # a diverged run fails the trial with its reason
    summary = read_metrics(outputs)
    missing = missing_reports(summary["history"], reported_before, summary["resumed_from_epoch"])
    for record in missing:
        tune.report({**record, EPOCHS_DONE: int(record["epoch"]) + 1})


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
