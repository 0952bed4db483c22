"""Ray Tune studies: a space file + a built dataset + a budget → the best configuration.

:func:`run_study` samples ``budget.trials`` configurations from a
:class:`~invlearn_ray.experiments.spaces.StudySpace` (TPE or random search, seeded per study:
:mod:`~invlearn_ray.experiments.tune.search`), trains each as a
Tune trial (:mod:`~invlearn_ray.experiments.tune.trial`) reporting the validation metrics after
every epoch, lets ASHA stop the weak ones, and picks the best trial by its best *validation*
epoch. Then — and only then — the best configuration is trained once more as a final run and
scored on the test split (method.md §6: selection reads validation only; test is scored once,
for the chosen config). The final run repeats the best trial exactly (same config, seed 0, same
code path), so its validation score equals the trial's.

Interruption: Ctrl-C (SIGINT) makes Tune save the experiment state; calling :func:`run_study`
again with the same arguments restores it with ``Tuner.restore`` — finished trials are kept,
unfinished ones continue from their last epoch checkpoint, unstarted ones start, and the searcher
continues from its saved state (TPE keeps what earlier trials taught it). A study folder
remembers what it is (``study.json``); resuming it with another space, dataset or budget is an
error, not a silent mix.

Where things go: the driver keeps the study's own files (``study.json``, ``trials.csv``,
``best.json``, ``search.png``, the MLflow store) in ``output_dir``; what trials and the final
run write — Tune's experiment and checkpoints, each trial's folder, the final run — goes to
``storage`` (default ``output_dir``). On a cluster of several nodes ``storage`` must be a
location every node reaches (``s3://…``): a trial runs, and is restarted after a lost node,
on whichever node has room.

MLflow: one experiment per study; ``MlflowTrialCallback`` (in the driver) gives every trial a
run with its full config as params, per-epoch metrics, tags and its outputs as artifacts; the
final run is logged with ``role=final`` and its test metrics; a finished study gets a run of its
own (``role=study``) with its search, best score, ``trials.csv``, ``best.json`` and its picture
(``search.png``, :mod:`~invlearn_ray.experiments.tune.study_figure`).

The study folder's layout is :mod:`~invlearn_ray.experiments.tune.study_dir`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray import tune
from ray.exceptions import RayTaskError
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from invlearn_ray import storage
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.distributed.reporting import EPOCHS_DONE
from invlearn_ray.errors import UserError
from invlearn_ray.experiments.runs import RunSpec, error_line, execute_runs
from invlearn_ray.experiments.spaces import StudySpace
from invlearn_ray.experiments.tracking import Tracker
from invlearn_ray.experiments.tune.budget import StudyBudget
from invlearn_ray.experiments.tune.callbacks import (
    HeapTrimCallback,
    MlflowTrialCallback,
    TrialProgressCallback,
)
from invlearn_ray.experiments.tune.search import search_algorithm, study_seed
from invlearn_ray.experiments.tune.study_dir import (
    BEST_FILE,
    EXPERIMENT,
    FINAL_DIR,
    SEARCH_FIGURE,
    TRIAL_OUTPUTS,
    TRIALS_FILE,
    TUNE_DIR,
    StudyResult,
    claim_study_dir,
    study_identity,
    write_best,
    write_trials_csv,
)
from invlearn_ray.experiments.tune.study_figure import write_study_figure
from invlearn_ray.experiments.tune.trial import TrialContext, run_trial

logger = logging.getLogger(__name__)


class StudyFailedError(RuntimeError, UserError):
    """Every trial of a study failed: there is no configuration to choose."""


@contextlib.contextmanager
def tune_console(verbose: int) -> Iterator[None]:
    """Tune's console during ``fit()``: at ``verbose=0`` its newer output engine still prints an
    experiment box and result paths for every study; its legacy reporter prints nothing there.
    ``RAY_AIR_NEW_OUTPUT`` is read when ``fit()`` starts, so it is set for the call only."""
    if verbose > 0:
        yield
        return
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


def _new_tuner(
    space: StudySpace,
    budget: StudyBudget,
    trainable,
    tune_root: str,
    callbacks: Sequence[Callback],
    verbose: int,
    seed: int,
) -> tune.Tuner:
    epochs = space.trial_config({}).epochs
    if budget.grace_period < epochs:
        scheduler = ASHAScheduler(
            time_attr=EPOCHS_DONE,  # not training_iteration: see EPOCHS_DONE
            # One past the last epoch: at max_t ASHA stops a trial itself, which would cut off
            # the trial's final step (writing its selected model) right after its last report.
            # Trials end by returning; ASHA only stops them at the rungs below.
            max_t=epochs + 1,
            grace_period=budget.grace_period,
            reduction_factor=budget.reduction_factor,
        )
    else:
        # A grace period of every epoch leaves ASHA one rung, at the last epoch, where
        # stopping a trial saves nothing and loses its selected model (a best trial without
        # outputs, seen in the resume test): every trial runs to its end.
        scheduler = FIFOScheduler()
    search_alg, param_space = search_algorithm(space, budget, seed)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode=space.mode,
            num_samples=budget.trials,
            scheduler=scheduler,
            search_alg=search_alg,
            reuse_actors=budget.reuse_processes,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=tune_root,
            callbacks=list(callbacks),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=budget.trial_retries),
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
    verbose: int = 0,
    test_switches: dict[str, Any] | None = None,
    storage_location: storage.Location | None = None,
) -> StudyResult:
    """Run (or resume) a study; see the module docstring.

    Args:
        space: what to search (pin fields with :meth:`StudySpace.pinned` first).
        dataset: a built dataset's location (a folder or an object-store URI).
        budget: trials, concurrency and resources.
        output_dir: the study's folder on the driver (created; an existing one is resumed).
        name: the study's name (default: the space's); MLflow runs are tagged with it.
        tracker: the MLflow experiment (default: one named after the study, default store).
        score_best: train the best configuration once more and score it on test.
        callbacks: extra Tune callbacks (they are saved with the experiment and come back on
            restore).
        verbose: Ray Tune's own console output: 0 none (the study logs one INFO line per
            ended trial instead), 1 Tune's status tables, 2 every result.
        storage_location: where Tune's experiment, the trials' folders and the final run go
            (default ``output_dir``); a URI every node reaches on a multi-node cluster.

    Returns:
        The study's result; ``complete`` is False when it was interrupted (call again to
        resume).

    Raises:
        StudyMismatchError: ``output_dir`` holds a different study.
        StudyFailedError: every trial failed.
    """
    dataset = storage.absolute(dataset)
    manifest = dd.verified_manifest(dataset)  # here, not in every trial
    study_dir = Path(output_dir).resolve()
    shared = storage.absolute(storage_location) if storage_location else str(study_dir)
    name = name or space.name
    identity = study_identity(space, dataset, budget)
    if shared != str(study_dir):
        identity["storage"] = shared  # its Tune state lives there: another storage, another study
    claim_study_dir(study_dir, identity)
    tracker = tracker or Tracker(name, study_dir)
    tune_root = storage.join(shared, TUNE_DIR)
    experiment_dir = storage.join(tune_root, EXPERIMENT)
    seed = study_seed(space, manifest.name, manifest.label_fraction, budget.search_seed)
    logger.info(f"{name}: {budget.search_algorithm} search, seed {seed}")
    resuming = tune.Tuner.can_restore(experiment_dir)
    context = TrialContext(
        space=space,
        dataset=dataset,
        outputs_root=storage.join(shared, TRIAL_OUTPUTS),
        workers=budget.workers,
        cpus_per_worker=budget.cpus_per_worker,
        torch_threads=max(1, math.floor(budget.cpus_per_trial)) if budget.workers == 0 else 1,
        # What Tune holds from earlier attempts, read before any trial resumes.
        reported_epochs=reported_epochs(saved_results(experiment_dir)) if resuming else {},
        test_switches=dict(test_switches or {}),
    )
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, context=context), budget.trial_resources()
    )
    # The per-epoch checkpoints with num_to_keep=1 force state snapshots that Tune warns about
    # at every report; they are small here and the warning would drown the progress output.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if resuming:
        # Restoring brings back the callbacks and run config saved with the experiment.
        tuner = tune.Tuner.restore(experiment_dir, trainable, resume_unfinished=True)
    else:
        ours = [
            MlflowTrialCallback(tracker, context, manifest.name, name),
            TrialProgressCallback(name, space.metric, space.mode, budget.trials),
            HeapTrimCallback(),
        ]
        tuner = _new_tuner(space, budget, trainable, tune_root, [*ours, *callbacks], verbose, seed)
    with tune_console(verbose):
        results = tuner.fit()
    # Which trials ended is read from the state Tune saved: in fit()'s own results, trials
    # an interruption stopped count as terminated too.
    saved = saved_results(experiment_dir)
    complete = saved.num_terminated + saved.num_errors == budget.trials

    trials = summarize_trials(results, space.metric, all_ended=complete)
    write_trials_csv(study_dir / TRIALS_FILE, trials, space)
    for trial in (t for t in trials if t["error"]):
        logger.warning(
            f"{name}: trial {trial['trial_id']} failed after {budget.trial_retries} "
            f"restart(s): {trial['error']} (config: {trial['params']})"
        )
        run_id = tracker.find_run(study=name, trial_id=trial["trial_id"], role="trial")
        if run_id is not None:
            tracker.set_tags(run_id, {"error": trial["error"]})
    finished = [t for t in trials if t["status"] == "TERMINATED"]
    failed = [t for t in trials if t["status"] == "ERROR"]
    result = StudyResult(
        name=name,
        output_dir=study_dir,
        metric=space.metric,
        complete=complete,
        trials=trials,
        tracking=tracker.describe(),
        failed_trials=len(failed),
        results=results,
    )
    if not complete:
        return result
    scored = [t for t in finished if t["best_valid"] is not None]
    if not scored:
        raise StudyFailedError(
            f"study {name!r}: none of its {budget.trials} trials reported {space.metric} "
            f"({len(failed)} failed); see the error column of {study_dir / TRIALS_FILE}"
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
            dataset=dataset,
            dataset_name=manifest.name,
            config=config,
            output_dir=storage.join(shared, FINAL_DIR),
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
    write_best(study_dir / BEST_FILE, result)
    title = f"{name} ({budget.search_algorithm} search, seed {seed})"
    write_study_figure(study_dir / SEARCH_FIGURE, trials, space, title)
    log_study_run(tracker, study_dir, result, budget, seed)
    return result


def log_study_run(
    tracker: Tracker, study_dir: Path, result: StudyResult, budget: StudyBudget, seed: int
) -> str:
    """The study's own MLflow run (``role=study``): how it searched, its best score, and its
    files (``trials.csv``, ``best.json``, ``search.png``). Found again, not duplicated, when a
    finished study is run once more."""
    run_id = tracker.find_run(study=result.name, role="study")
    if run_id is None:
        run_id = tracker.start_run(
            f"{result.name}/study",
            {"study": result.name, "role": "study", "best_trial_id": str(result.best_trial_id)},
            {
                "search": budget.search_algorithm,
                "search_seed": str(seed),
                "base_search_seed": str(budget.search_seed),
                "trials": str(budget.trials),
                "concurrency": str(budget.concurrency),
                "workers": str(budget.workers),
            },
        )
    tracker.log_metrics(
        run_id, {"best_valid": result.best_valid, "failed_trials": result.failed_trials}
    )
    for file in (TRIALS_FILE, BEST_FILE, SEARCH_FIGURE):
        tracker.log_artifacts(run_id, study_dir / file)
    tracker.end_run(run_id, "FINISHED")
    return run_id


def saved_results(experiment_dir: str) -> tune.ResultGrid:
    """The results of the experiment as Tune saved it (read back by a restore, which needs a
    trainable but runs nothing)."""
    return tune.Tuner.restore(experiment_dir, run_trial).get_results()


def summarize_trials(
    results: tune.ResultGrid, metric: str, all_ended: bool = False
) -> list[dict[str, Any]]:
    """One dict per trial of a Tune experiment, by trial id: id, status, params, best
    validation epoch, when it started (seconds since the epoch; None before its first report),
    error.

    The best epoch is the one with the highest ``metric`` over *all* reported epochs — the
    epoch the trainer itself keeps (it selects on the same metric). ``status`` is
    ``TERMINATED`` (finished, or stopped by ASHA), ``ERROR`` or ``UNFINISHED`` (a trial of an
    interrupted study that has not ended). A trial's last result says ``done`` when Tune saw it
    end in this process, but one that ended just before an interruption can come back from a
    restore without it: ``all_ended`` (every trial ended, from the saved state) settles it.
    """
    summaries = [summarize_trial(result, metric, all_ended) for result in results]
    return sorted(summaries, key=lambda summary: summary["trial_id"])


def summarize_trial(result: tune.Result, metric: str, ended: bool = False) -> dict[str, Any]:
    """One trial's summary (see :func:`summarize_trials`) from its Tune ``Result``; ``ended``
    says the trial is known to have ended (a trial with an error always has)."""
    reports = unique_epochs(result.metrics_dataframe)
    scores = pd.to_numeric(reports.get(metric, pd.Series(dtype=float)), errors="coerce")
    scores = scores[np.isfinite(scores)]
    best = reports.loc[scores.idxmax()] if len(scores) else None
    started = None
    if {"timestamp", "time_total_s"} <= set(reports.columns) and len(reports):
        first = reports.iloc[0]
        started = float(first["timestamp"]) - float(first["time_total_s"])
    if result.error is not None:
        status = "ERROR"
    elif ended or result.metrics.get("done"):
        status = "TERMINATED"
    else:
        status = "UNFINISHED"
    return {
        "trial_id": result.metrics["trial_id"],
        "status": status,
        # A trial that failed before its first report has no config in a restored
        # experiment's results; its error still says what happened.
        "params": dict(result.config or {}),
        "best_valid": float(best[metric]) if best is not None else None,
        "best_epoch": int(best["epoch"]) if best is not None else None,
        "epochs_reported": len(reports),
        "started": started,
        "error": trial_error(result.error) if result.error is not None else None,
    }


def unique_epochs(reports: pd.DataFrame | None) -> pd.DataFrame:
    """A trial's reports, one per epoch (the last). A trial resumed after a lost node can
    report an epoch twice: Tune records a report before it fetches the report's checkpoint,
    and a node lost in between restarts the trial from the checkpoint before (the same epoch
    again, with the same scores: resuming is exact)."""
    if reports is None:
        return pd.DataFrame()
    if "epoch" not in reports:
        return reports
    return reports.drop_duplicates(subset="epoch", keep="last").reset_index(drop=True)


def trial_error(error: BaseException) -> str:
    """One line naming a trial's own exception (Tune wraps it in a ``RayTaskError``)."""
    if isinstance(error, RayTaskError) and error.cause is not None:
        error = error.cause
    return error_line(error)


def reported_epochs(results: tune.ResultGrid) -> dict[str, tuple[int, ...]]:
    """The epochs each trial has reported to Tune, by trial id."""
    epochs = {}
    for result in results:
        reports = result.metrics_dataframe
        column = reports["epoch"] if reports is not None and "epoch" in reports else []
        epochs[result.metrics["trial_id"]] = tuple(int(epoch) for epoch in column)
    return epochs
