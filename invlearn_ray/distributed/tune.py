"""Ray Tune studies: a space file + a built dataset + a budget → the best configuration.

:func:`run_study` samples ``budget.trials`` configurations from a
:class:`~invlearn_ray.distributed.spaces.StudySpace` (seeded random search), trains each as a
Tune trial reporting the validation metrics after every epoch, lets ASHA stop the weak ones,
and picks the best trial by its best *validation* epoch. Then — and only then — the best
configuration is trained once more as a final run and scored on the test split
(method.md §6: selection reads validation only; test is scored once, for the chosen config).
The final run repeats the best trial exactly (same config, seed 0, same code path), so its
validation score equals the trial's.

A trial runs

* with ``workers=0``: the plain :class:`~invlearn_ray.core.trainer.Trainer` inside the trial
  process, one ``tune.report`` per epoch with the trainer's state as the checkpoint. Each Ray
  Train ``fit()`` costs ~10–19 s of start-up on this machine, so sweeps of small datasets skip it;
* with ``workers=N>=1``: a Ray Train run of N data-parallel workers (the project's
  ``train_loop_per_worker``), its per-epoch ``ray.train.report`` forwarded to Tune by
  ``TuneReportCallback`` (the Tune-over-Train pattern of ray_notes.md). The trial process itself
  holds only ``driver_cpus``; the workers reserve their own CPUs.

Interruption: Ctrl-C (SIGINT) makes Tune save the experiment state; calling :func:`run_study`
again with the same arguments restores it with ``Tuner.restore`` — finished trials are kept,
unfinished ones continue from their last epoch checkpoint, unstarted ones start. A study folder
remembers what it is (``study.json``); resuming it with another space, dataset or budget is an
error, not a silent mix.

MLflow: one experiment per study; :class:`MlflowTrialCallback` (in the driver) gives every trial
a run with its full config as params, per-epoch metrics, tags and its outputs as artifacts; the
final run is logged with ``role=final`` and its test metrics.

Study folder::

    <study_dir>/study.json      what this study is (space, dataset, budget)
    <study_dir>/tune/trials/    Tune's experiment (trial folders, checkpoints, state)
    <study_dir>/trial_outputs/<trial id>/   a finished trial's selected model, direction log
                                and history (Train-backed trials: also Train's checkpoints)
    <study_dir>/trials.csv      one row per trial: status, parameters, best validation score
    <study_dir>/best.json       the best configuration, its trial, and its test metrics
    <study_dir>/final/          the final run's model, metrics and direction log
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray.train
import torch
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune import Callback
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from invlearn_ray.core.checkpoint import save_model
from invlearn_ray.core.trainer import EpochRecord, Trainer
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.distributed.run_dir import DIRECTION_LOG_FILE, MODEL_DIR, read_metrics
from invlearn_ray.distributed.runs import RunOutcome, RunSpec, execute_runs
from invlearn_ray.distributed.spaces import StudySpace
from invlearn_ray.distributed.tracking import Tracker, config_params, run_tags
from invlearn_ray.distributed.train_loop import (
    SHARDED_SPLITS,
    ExactSplitConfig,
    read_shard_dataset,
    run_summary,
    train_loop_per_worker,
)
from invlearn_ray.errors import UserError

STUDY_FILE = "study.json"
BEST_FILE = "best.json"
TRIALS_FILE = "trials.csv"
TUNE_DIR = "tune"
EXPERIMENT = "trials"
FINAL_DIR = "final"
TRIAL_OUTPUTS = "trial_outputs"
TRIAL_CHECKPOINT = "trainer.pt"
HISTORY_FILE = "history.json"


class StudyMismatchError(RuntimeError, UserError):
    """A study folder holds another study (space, dataset or budget differ)."""


class StudyFailedError(RuntimeError, UserError):
    """Every trial of a study failed: there is no configuration to choose."""


@dataclass(frozen=True)
class StudyBudget:
    """How much a study may spend — the same for every method it is compared with.

    Attributes:
        trials: configurations sampled (Tune's ``num_samples``; spaces have no grid).
        concurrency: trials running at once.
        workers: Ray Train workers per trial; 0 runs the trainer in the trial process.
        cpus_per_trial: CPUs of a trial process when ``workers=0`` (torch gets as many threads).
        cpus_per_worker: CPUs of each Train worker when ``workers>=1`` (0.5 leaves room for Ray
            Data's read tasks on 2 CPUs — ray_notes.md).
        driver_cpus: CPUs of a trial process that only drives Train workers (Tune refuses 0).
        grace_period: epochs every trial runs before ASHA may stop it.
        reduction_factor: ASHA keeps the best 1/reduction_factor at each rung.
        search_seed: seeds the random search, so a study draws the same configurations again.
    """

    trials: int = 8
    concurrency: int = 2
    workers: int = 0
    cpus_per_trial: float = 1.0
    cpus_per_worker: float = 0.5
    driver_cpus: float = 0.1
    grace_period: int = 1
    reduction_factor: int = 2
    search_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("trials", "concurrency", "grace_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"StudyBudget.{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"StudyBudget.workers must be >= 0, got {self.workers}")
        for name in ("cpus_per_trial", "cpus_per_worker", "driver_cpus"):
            if not getattr(self, name) > 0:
                raise ValueError(f"StudyBudget.{name} must be > 0, got {getattr(self, name)}")
        if self.reduction_factor < 2:
            raise ValueError(f"StudyBudget.reduction_factor must be >= 2: {self.reduction_factor}")

    def trial_resources(self) -> dict[str, float]:
        return {"CPU": self.cpus_per_trial if self.workers == 0 else self.driver_cpus}


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its sampled parameters (shipped once via the object
    store with ``tune.with_parameters``)."""

    space: StudySpace
    dataset: str
    outputs_root: str
    experiment_dir: str
    workers: int
    cpus_per_worker: float
    torch_threads: int

    def trial_outputs(self, trial_id: str) -> Path:
        """A trial's own folder. Not Tune's ``get_trial_dir()``: that is a staging folder in
        Ray's session directory, which Tune does not copy to the study's storage."""
        return Path(self.outputs_root) / trial_id

    def tune_reports(self, trial_id: str) -> list[dict[str, Any]]:
        """What Tune has recorded for a trial so far (its ``result.json``)."""
        folders = sorted(Path(self.experiment_dir).glob(f"*_{trial_id}_*"))
        return read_reports(folders[0]) if folders else []


@dataclass
class StudyResult:
    """The outcome of a study (``complete=False`` when it was interrupted)."""

    name: str
    output_dir: Path
    metric: str
    complete: bool
    trials: list[dict[str, Any]]
    best_config: dict[str, Any] | None = None
    best_valid: float | None = None
    best_trial_id: str | None = None
    best_epoch: int | None = None
    final: RunOutcome | None = None
    tracking: str | None = None
    failed_trials: int = field(default=0)

    @property
    def test(self) -> dict[str, float]:
        return self.final.test if self.final is not None and self.final.ok else {}


# ------------------------------------------------------------------------------------------
# The trial
# ------------------------------------------------------------------------------------------


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
    log = {
        key: torch.cat(values).cpu() if values else torch.zeros(0)
        for key, values in trainer.direction_log.items()
    }
    torch.save(
        {"direction_log": log, "weight_histograms": dict(trainer.weight_histograms)},
        output_dir / DIRECTION_LOG_FILE,
    )
    history = [record.flat() for record in trainer.history]
    (output_dir / HISTORY_FILE).write_text(json.dumps(_strict(history), indent=2) + "\n")


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
    # Read before fit(): Tune writes this attempt's reports asynchronously, earlier attempts'
    # reports are all on disk when a restored trial starts.
    reported_before = context.tune_reports(tune.get_context().get_trial_id())
    run_summary(trainer.fit().return_value)  # a diverged run fails the trial with its reason
    summary = read_metrics(outputs)
    missing = missing_reports(summary["history"], reported_before, summary["resumed_from_epoch"])
    for record in missing:
        tune.report(record)


def missing_reports(
    history: list[dict[str, Any]],
    reported_before: list[dict[str, Any]],
    resumed_from_epoch: int | None,
) -> list[dict[str, Any]]:
    """Epochs a resumed Train run finished in an earlier attempt whose reports Tune never got.

    Args:
        history: the run's per-epoch records (``metrics.json``).
        reported_before: Tune's results of the trial from earlier attempts.
        resumed_from_epoch: the epoch the last attempt resumed at (None: it started afresh,
            and reported every epoch itself).
    """
    if resumed_from_epoch is None:
        return []
    seen = {int(report["epoch"]) for report in reported_before if "epoch" in report}
    return [
        record
        for record in history
        if int(record["epoch"]) < resumed_from_epoch and int(record["epoch"]) not in seen
    ]


# ------------------------------------------------------------------------------------------
# MLflow, from the driver
# ------------------------------------------------------------------------------------------

_TUNE_RESULT_KEYS = {"epoch", "best_epoch"}


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The metrics of a Tune result that the trial reported (not Tune's bookkeeping)."""
    return {
        key: value
        for key, value in result.items()
        if ("/" in key or key.startswith("train_") or key in _TUNE_RESULT_KEYS)
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    }


class MlflowTrialCallback(Callback):
    """One MLflow run per trial, written by the Tune driver.

    On a resumed study the run of a trial that had started is found again by its tags
    (``study``, ``trial_id``) and continued, so no trial gets two runs.
    """

    def __init__(self, tracker: Tracker, context: TrialContext, dataset_name: str, study: str):
        self.tracker = tracker
        self.context = context
        self.dataset_name = dataset_name
        self.study = study
        self._runs: dict[str, str] = {}

    def _run_id(self, trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        run_id = self.tracker.find_run(study=self.study, trial_id=trial.trial_id, role="trial")
        if run_id is None:
            config = self.context.space.trial_config(trial.config)
            tags = run_tags(
                config,
                self.dataset_name,
                self.tracker.commit,
                role="trial",
                study=self.study,
                trial_id=trial.trial_id,
            )
            run_id = self.tracker.start_run(
                f"{self.study}/{trial.trial_id}", tags, config_params(config)
            )
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        metrics = epoch_metrics(result)
        if "epoch" in metrics:
            self.tracker.log_history(self._run_id(trial), [metrics])

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_id(trial)
        outputs = self.context.trial_outputs(trial.trial_id)
        for name in (MODEL_DIR, DIRECTION_LOG_FILE, HISTORY_FILE):
            self.tracker.log_artifacts(run_id, outputs / name)
        last = trial.last_result or {}
        epochs = int(last.get("epoch", -1)) + 1
        self.tracker.set_tags(
            run_id,
            {
                "epochs_run": epochs,
                # ASHA's early stop ends a trial before the trainer's own stopping rule did.
                "stopped_by_scheduler": not outputs.joinpath(MODEL_DIR).is_dir(),
            },
        )
        self.tracker.end_run(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_id(trial)
        self.tracker.set_tags(run_id, {"error": _trial_error(trial)})
        self.tracker.end_run(run_id, "FAILED")


def _trial_error(trial) -> str:
    """The last line of the trial's ``error.txt`` (Tune writes it to the trial's storage)."""
    error_file = Path(trial.path) / "error.txt"
    if error_file.is_file():
        lines = [line for line in error_file.read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return f"trial failed; see {error_file}"


# ------------------------------------------------------------------------------------------
# The study
# ------------------------------------------------------------------------------------------


def study_identity(space: StudySpace, dataset: Path, budget: StudyBudget) -> dict[str, Any]:
    """What makes two runs of a study the same study (stored in ``study.json``)."""
    return {"space": space.to_dict(), "dataset": str(dataset), "budget": asdict(budget)}


def _claim_study_dir(study_dir: Path, identity: dict[str, Any]) -> None:
    path = study_dir / STUDY_FILE
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != identity:
            differing = sorted(key for key in identity if stored.get(key) != identity[key])
            raise StudyMismatchError(
                f"{study_dir} holds another study (its {', '.join(differing)} differ); resume it "
                "with the same space, dataset and budget, or choose another output folder"
            )
        return
    study_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2) + "\n")


def _make_tuner(
    space: StudySpace,
    budget: StudyBudget,
    trainable,
    experiment_dir: Path,
    callbacks: Sequence[Callback],
    verbose: int,
) -> tune.Tuner:
    if tune.Tuner.can_restore(str(experiment_dir)):
        # Restoring brings back the callbacks and run config saved with the experiment.
        return tune.Tuner.restore(str(experiment_dir), trainable, resume_unfinished=True)
    epochs = space.trial_config({}).epochs
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        # One past the last epoch: at max_t ASHA stops a trial itself, which would cut off the
        # trial's final step (writing its selected model) right after its last report. Trials
        # end by returning; ASHA only stops them at the rungs below.
        max_t=epochs + 1,
        grace_period=min(budget.grace_period, epochs),
        reduction_factor=budget.reduction_factor,
    )
    return tune.Tuner(
        trainable,
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode=space.mode,
            num_samples=budget.trials,
            max_concurrent_trials=budget.concurrency,
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(random_state=budget.search_seed),
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=str(experiment_dir.parent),
            callbacks=list(callbacks),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=verbose,
        ),
    )


def run_study(
    space: StudySpace,
    dataset: str | Path,
    budget: StudyBudget,
    output_dir: str | Path,
    *,
    name: str | None = None,
    tracker: Tracker | None = None,
    score_best: bool = True,
    callbacks: Sequence[Callback] = (),
    verbose: int = 1,
) -> StudyResult:
    """Run (or resume) a study; see the module docstring.

    Args:
        space: what to search (pin fields with :meth:`StudySpace.pinned` first).
        dataset: a built dataset folder.
        budget: trials, concurrency and resources.
        output_dir: the study's folder (created; an existing one is resumed).
        name: the study's name (default: the space's); MLflow runs are tagged with it.
        tracker: the MLflow experiment (default: one named after the study, default store).
        score_best: train the best configuration once more and score it on test.
        callbacks: extra Tune callbacks (they are saved with the experiment and come back on
            restore).
        verbose: Tune's progress output (0 silent, 1 a status table, 2 every result).

    Returns:
        The study's result; ``complete`` is False when it was interrupted (call again to
        resume).

    Raises:
        StudyMismatchError: ``output_dir`` holds a different study.
        StudyFailedError: every trial failed.
    """
    dataset = Path(dataset).resolve()
    manifest = dd.verified_manifest(dataset)  # here, not in every trial
    study_dir = Path(output_dir).resolve()
    name = name or space.name
    _claim_study_dir(study_dir, study_identity(space, dataset, budget))
    tracker = tracker or Tracker(name, study_dir)
    experiment_dir = study_dir / TUNE_DIR / EXPERIMENT
    context = TrialContext(
        space=space,
        dataset=str(dataset),
        outputs_root=str(study_dir / TRIAL_OUTPUTS),
        experiment_dir=str(experiment_dir),
        workers=budget.workers,
        cpus_per_worker=budget.cpus_per_worker,
        torch_threads=max(1, math.floor(budget.cpus_per_trial)) if budget.workers == 0 else 1,
    )
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, context=context), budget.trial_resources()
    )
    # The per-epoch checkpoints with num_to_keep=1 force state snapshots that Tune warns about
    # at every report; they are small here and the warning would drown the progress output.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    tuner = _make_tuner(
        space,
        budget,
        trainable,
        experiment_dir,
        [MlflowTrialCallback(tracker, context, manifest.name, name), *callbacks],
        verbose,
    )
    tuner.fit()

    trials = summarize_trials(experiment_dir, space)
    _write_trials_csv(study_dir / TRIALS_FILE, trials, space)
    finished = [t for t in trials if t["status"] == "TERMINATED"]
    failed = [t for t in trials if t["status"] == "ERROR"]
    complete = len(finished) + len(failed) == budget.trials
    result = StudyResult(
        name=name,
        output_dir=study_dir,
        metric=space.metric,
        complete=complete,
        trials=trials,
        tracking=tracker.describe(),
        failed_trials=len(failed),
    )
    if not complete:
        return result
    scored = [t for t in finished if t["best_valid"] is not None]
    if not scored:
        raise StudyFailedError(
            f"study {name!r}: none of its {budget.trials} trials reported {space.metric} "
            f"({len(failed)} failed); see {study_dir / TRIALS_FILE} and the trials' error.txt"
        )
    best = max(scored, key=lambda trial: trial["best_valid"])
    config = space.trial_config(best["params"])
    result.best_config = config.to_dict()
    result.best_valid = best["best_valid"]
    result.best_trial_id = best["trial_id"]
    result.best_epoch = best["best_epoch"]
    if score_best:
        spec = RunSpec(
            key=f"{name}/final",
            dataset=str(dataset),
            dataset_name=manifest.name,
            config=config,
            output_dir=str(study_dir / FINAL_DIR),
            tags={"study": name, "best_trial_id": best["trial_id"]},
        )
        (result.final,) = execute_runs(
            [spec],
            tracker,
            role="final",
            workers=budget.workers,
            cpus_per_run=budget.cpus_per_trial,
            cpus_per_worker=budget.cpus_per_worker,
        )
    _write_best(study_dir / BEST_FILE, result)
    return result


def summarize_trials(experiment_dir: Path, space: StudySpace) -> list[dict[str, Any]]:
    """One dict per trial of a Tune experiment: id, status, params, best validation epoch.

    The best epoch is the one with the highest ``space.metric`` over *all* reported epochs —
    the epoch the trainer itself keeps (it selects on the same metric).
    """
    analysis = tune.ExperimentAnalysis(str(experiment_dir))
    summaries = []
    for trial in sorted(analysis.trials, key=lambda trial: trial.trial_id):
        reports = read_reports(Path(trial.path))
        scored = [r for r in reports if _is_number(r.get(space.metric))]
        best = max(scored, key=lambda report: report[space.metric]) if scored else None
        summaries.append(
            {
                "trial_id": trial.trial_id,
                "status": trial.status,
                "params": dict(trial.config),
                "best_valid": float(best[space.metric]) if best else None,
                "best_epoch": int(best["epoch"]) if best else None,
                "epochs_reported": len(reports),
                "error": _trial_error(trial) if trial.status == "ERROR" else None,
            }
        )
    return summaries


def read_reports(trial_path: Path) -> list[dict[str, Any]]:
    """Every ``tune.report`` of a trial, in order (Tune's ``result.json``, one JSON a line)."""
    path = trial_path / "result.json"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _write_trials_csv(path: Path, trials: list[dict[str, Any]], space: StudySpace) -> None:
    columns = ["trial_id", "status", *space.search, "best_valid", "best_epoch", "epochs_reported"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns, "error"])
        for trial in trials:
            row = [trial.get(c, trial["params"].get(c)) for c in columns]
            writer.writerow([*row, trial["error"] or ""])


def _write_best(path: Path, result: StudyResult) -> None:
    final = result.final
    values = {
        "study": result.name,
        "metric": result.metric,
        "best_valid": result.best_valid,
        "best_trial_id": result.best_trial_id,
        "best_epoch": result.best_epoch,
        "config": result.best_config,
        "final": None
        if final is None
        else {
            "status": final.status,
            "error": final.error,
            "valid": final.valid,
            "test": final.test,
            "best_epoch": final.best_epoch,
            "output_dir": final.spec.output_dir,
        },
        "trials": len(result.trials),
        "failed_trials": result.failed_trials,
        "tracking": result.tracking,
    }
    path.write_text(json.dumps(_strict(values), indent=2) + "\n")


def _strict(value: Any) -> Any:
    """JSON-safe: non-finite floats become null."""
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def load_best_config(study_dir: str | Path) -> dict[str, Any]:
    """The best configuration a finished study chose (from its ``best.json``).

    Raises:
        FileNotFoundError: the study has not finished (no ``best.json``).
    """
    path = Path(study_dir) / BEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the study in {study_dir} has not finished; run it (again) to "
            "complete or resume it"
        )
    return json.loads(path.read_text())["config"]
