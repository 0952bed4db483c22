"""Tune callbacks, run in the driver: one MLflow run per trial (:class:`MlflowTrialCallback`),
one progress line per ended trial (:class:`TrialProgressCallback`) and the driver's freed heap
given back after each (:class:`HeapTrimCallback`)."""

from __future__ import annotations

import logging
import math
from typing import Any

from ray.tune import Callback

from invlearn_ray import storage
from invlearn_ray.experiments.tracking import Tracker, config_params, run_tags
from invlearn_ray.experiments.tune.trial import TrialContext
from invlearn_ray.training.heap import release_freed_heap
from invlearn_ray.training.run_folder import DIRECTION_LOG_FILE, METRICS_FILE, MODEL_DIR

logger = logging.getLogger(__name__)

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
        self._logged_epoch: dict[str, int] = {}

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
        if "epoch" not in metrics:
            return
        run_id = self._run_id(trial)
        # An epoch a resumed trial reports again (see study.unique_epochs) is logged once. What
        # was logged is read from MLflow once per trial and process: a restored study's
        # callback is the one pickled when the study began.
        if trial.trial_id not in self._logged_epoch:
            self._logged_epoch[trial.trial_id] = self.tracker.last_step(run_id, "epoch")
        if metrics["epoch"] > self._logged_epoch[trial.trial_id]:
            self.tracker.log_history(run_id, [metrics])
            self._logged_epoch[trial.trial_id] = metrics["epoch"]

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_id(trial)
        outputs = self.context.trial_outputs(trial.trial_id)
        for name in (MODEL_DIR, DIRECTION_LOG_FILE, METRICS_FILE):
            self.tracker.log_artifacts(run_id, storage.join(outputs, name))
        last = trial.last_result or {}
        epochs = int(last.get("epoch", -1)) + 1
        self.tracker.set_tags(
            run_id,
            {
                "epochs_run": epochs,
                # ASHA's early stop ends a trial before the trainer's own stopping rule did.
                "stopped_by_scheduler": not storage.is_dir(storage.join(outputs, MODEL_DIR)),
            },
        )
        self.tracker.end_run(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        # The error itself is tagged by run_study, from the ResultGrid that fit() returns.
        self.tracker.end_run(self._run_id(trial), "FAILED")


class TrialProgressCallback(Callback):
    """One log line (INFO) per ended trial: the study's own progress, in place of Ray Tune's
    console tables (shown only with ``verbose >= 1``).

    Its counts and each trial's best score so far are Tune callback state, saved with the
    experiment, so a resumed study keeps counting where it stopped.
    """

    def __init__(self, study: str, metric: str, mode: str, trials: int) -> None:
        self.study = study
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.trials = trials
        self._best: dict[str, tuple[float, int]] = {}
        self._ended = 0

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric)
        if not _is_finite_number(value) or "epoch" not in result:
            return
        best = self._best.get(trial.trial_id)
        if best is None or self.sign * value > self.sign * best[0]:
            self._best[trial.trial_id] = (float(value), int(result["epoch"]))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        epochs = int((trial.last_result or {}).get("epoch", -1)) + 1
        best = self._best.get(trial.trial_id)
        score = (
            f"best {self.metric} {best[0]:.4f} at epoch {best[1]}"
            if best is not None
            else f"no {self.metric}"
        )
        self._log(f"trial {trial.trial_id} done: {score} ({epochs} epochs)")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._log(f"trial {trial.trial_id} FAILED (its error is in trials.csv)")

    def _log(self, text: str) -> None:
        self._ended += 1
        width = len(str(self.trials))
        logger.info(f"[{self._ended:>{width}}/{self.trials}] {self.study}: {text}")

    def get_state(self) -> dict[str, Any]:
        return {"best": dict(self._best), "ended": self._ended}

    def set_state(self, state: dict[str, Any]) -> None:
        self._best = {key: tuple(value) for key, value in state["best"].items()}
        self._ended = state["ended"]


class HeapTrimCallback(Callback):
    """Give the driver's freed heap pages back to the OS after every ended trial: a study of
    hundreds of trials otherwise grows the driver's resident memory by what glibc keeps of
    Tune's per-result garbage."""

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        release_freed_heap()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        release_freed_heap()


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
