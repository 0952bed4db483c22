"""Final training runs: many configurations trained, scored on test once, tracked in MLflow.

A :class:`RunSpec` is one configuration on one built dataset (the benchmark's cells; a study's
re-run of its best configuration). :func:`execute_runs` trains them

* as Ray tasks of ``cpus_per_run`` CPUs each (``workers=0``, the default: the plain
  :class:`~invlearn_ray.training.trainer.Trainer` in the task, torch limited to one thread per CPU
  so that two runs share a 2-core machine instead of fighting over it), or
* one after another as Ray Train runs of ``workers`` data-parallel workers each;

and, in the driver, as each run finishes: logs one progress line (INFO; a progress bar counts
the runs), logs it to MLflow (one writer, see :mod:`~invlearn_ray.experiments.tracking`) and
returns a :class:`RunOutcome`.

A run that raises — a diverged loss, a broken dataset, a dead worker — becomes a ``failed``
outcome carrying the error; the other runs go on and the caller reports the failure rather than
dropping it. A run whose output folder already holds the finished result of the *same* spec
(and whose MLflow run exists) is reused, not retrained, so an interrupted benchmark resumes; a
run folder holding another spec's (or, with ``reuse=False``, any) finished run is retrained and
replaced whole — these folders belong to the benchmark or study that plans them.
"""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from invlearn_ray import storage
from invlearn_ray.distributed.train import run_training
from invlearn_ray.experiments.tracking import (
    Tracker,
    config_params,
    ranking_protocol_tags,
    run_tags,
)
from invlearn_ray.progress import progress_bar
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.run_folder import finite_or_none, read_direction_log, read_metrics

SPEC_FILE = "run_spec.json"
OUTCOME_FILE = "outcome.json"
WEIGHT_HISTOGRAMS_FILE = "weight_histograms.json"
STATUS_OK, STATUS_FAILED = "ok", "failed"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """One configuration to train and score.

    Attributes:
        key: unique, readable id (``synthetic/gmf/ig/seed1``); the MLflow run name.
        dataset: a built dataset folder (absolute path).
        dataset_name: the name tables and tags show.
        config: what to train (its ``seed`` is the run's seed).
        output_dir: the run's own folder (model, metrics, direction log).
        tags: extra MLflow tags (e.g. ``group``, ``study``, ``entry``).
    """

    key: str
    dataset: str
    dataset_name: str
    config: TrainConfig
    output_dir: str
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "config": self.config.to_dict()}


@dataclass
class RunOutcome:
    """What a run produced, or why it failed."""

    spec: RunSpec
    status: str
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    best_epoch: int = -1
    epochs_run: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    traceback: str | None = None
    run_id: str | None = None
    reused: bool = False

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "spec": self.spec.to_dict()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunOutcome:
        spec = dict(values["spec"])
        spec["config"] = TrainConfig.from_dict(spec["config"])
        return cls(
            **{
                **values,
                "spec": RunSpec(**spec),
                "valid": _numbers(values["valid"]),
                "test": _numbers(values["test"]),
                "history": [_numbers(record) for record in values["history"]],
            }
        )


def execute_run(spec: RunSpec, workers: int = 0, cpus_per_worker: float = 0.5) -> RunOutcome:
    """Train one spec in this process (or as a Ray Train run); never raises on a failed run."""
    started = time.perf_counter()
    output_dir = spec.output_dir
    try:
        summary = run_training(
            spec.dataset,
            spec.config,
            workers,
            output_dir,
            cpus_per_worker=cpus_per_worker,
            run_name="train",
            overwrite=True,
        )
        metrics = read_metrics(output_dir)
        write_weight_histograms(output_dir)
        outcome = RunOutcome(
            spec=spec,
            status=STATUS_OK,
            valid=_numbers(summary["valid"]),
            test=_numbers(summary["test"]),
            best_epoch=int(summary["best_epoch"]),
            epochs_run=int(summary["epochs_run"]),
            history=[_numbers(record) for record in metrics["history"]],
        )
    except Exception as error:  # a failed run is a result to report, not a crash of the batch
        outcome = failed_outcome(spec, error)
    outcome.seconds = time.perf_counter() - started
    _write_outcome(outcome)
    return outcome


def failed_outcome(spec: RunSpec, error: BaseException) -> RunOutcome:
    """A ``failed`` outcome whose ``error`` is :func:`error_line`."""
    return RunOutcome(
        spec=spec,
        status=STATUS_FAILED,
        error=error_line(error),
        traceback="".join(traceback.format_exception(error))[-20_000:],
    )


def error_line(error: BaseException) -> str:
    """One line for a table or a tag: the exception's type and its message's last line."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else repr(error)}"


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    """Numeric entries; JSON null (an undefined metric, e.g. precision with no positives)
    comes back as NaN so that aggregation treats it as missing, not as zero."""
    kept = {}
    for key, value in values.items():
        if value is None:
            kept[key] = math.nan
        elif isinstance(value, int | float) and not isinstance(value, bool):
            kept[key] = float(value)
    return kept


def write_weight_histograms(output_dir: storage.Location) -> str | None:
    """The IDL weight histograms of ``direction_log.pt`` as readable JSON (an MLflow artifact)."""
    log = read_direction_log(output_dir)
    if log is None:
        return None
    histograms = {
        str(epoch): counts.tolist() for epoch, counts in sorted(log["weight_histograms"].items())
    }
    if not histograms:
        return None
    bins = len(next(iter(histograms.values())))
    target = storage.join(output_dir, WEIGHT_HISTOGRAMS_FILE)
    storage.write_text(
        target,
        json.dumps(
            {
                "quantity": "IDL positive weight w1 on the diagnostic unlabeled rows (w0 = 1 - w1)",
                "bin_edges": [index / bins for index in range(bins + 1)],
                "counts_per_epoch": histograms,
            },
            indent=2,
        )
        + "\n",
    )
    return target


def _write_outcome(outcome: RunOutcome) -> None:
    """The run's spec and outcome, beside its outputs (written after the run is published;
    in an object store, after its commit file, which covers the run's own outputs only)."""
    output_dir = outcome.spec.output_dir
    storage.make_dirs(output_dir)
    spec = json.dumps(outcome.spec.to_dict(), indent=2) + "\n"
    storage.write_text(storage.join(output_dir, SPEC_FILE), spec)
    values = outcome.to_dict()
    values.pop("run_id")
    # Strict JSON: undefined metrics become null (read back as NaN by _numbers).
    text = json.dumps(finite_or_none(values), indent=2, allow_nan=False) + "\n"
    storage.write_text(storage.join(output_dir, OUTCOME_FILE), text)


def finished_outcome(spec: RunSpec) -> RunOutcome | None:
    """The stored outcome of an identical, successful earlier run of ``spec``, or None."""
    path = storage.join(spec.output_dir, OUTCOME_FILE)
    if not storage.is_file(path):
        return None
    try:
        stored = RunOutcome.from_dict(json.loads(storage.read_text(path)))
    except (ValueError, TypeError, KeyError):
        return None
    if not stored.ok or stored.spec.to_dict() != spec.to_dict():
        return None
    stored.reused = True
    return stored


# ------------------------------------------------------------------------------------------
# Many runs, tracked from the driver
# ------------------------------------------------------------------------------------------


def _run_in_task(spec: RunSpec, threads: int) -> RunOutcome:
    torch.set_num_threads(threads)
    return execute_run(spec)


def progress_line(outcome: RunOutcome, done: int, total: int) -> str:
    """``[ 3/39] synthetic/gmf/ig/seed0  AUC 0.6412  GAUC 0.6021  (8.1 s)`` or the error."""
    head = f"[{done:>{len(str(total))}}/{total}] {outcome.spec.key}"
    if not outcome.ok:
        return f"{head}  FAILED {outcome.error}"
    scores = "  ".join(
        f"{name} {outcome.test[key]:.4f}"
        for key, name in (("auc", "AUC"), ("gauc", "GAUC"), ("ndcg_at_10", "NDCG@10"))
        if key in outcome.test
    )
    when = "reused" if outcome.reused else f"{outcome.seconds:.1f} s"
    return f"{head}  {scores}  (best epoch {outcome.best_epoch}, {when})"


def track_outcome(
    tracker: Tracker, outcome: RunOutcome, role: str, parent_run_id: str | None = None
) -> str:
    """Log a run to MLflow: params, tags, per-epoch history, test metrics, artifacts."""
    spec = outcome.spec
    tags = run_tags(
        spec.config,
        spec.dataset_name,
        tracker.commit,
        role=role,
        run_key=spec.key,
        status=outcome.status,
        error=outcome.error,
        **spec.tags,
    )
    run_id = tracker.start_run(spec.key, tags, config_params(spec.config), parent_run_id)
    if outcome.ok:
        tracker.log_history(run_id, outcome.history)
        tracker.log_metrics(run_id, outcome.test, prefix="test/")
        tracker.set_tags(run_id, ranking_protocol_tags(outcome.test))
        tracker.log_metrics(
            run_id,
            {"best_epoch": outcome.best_epoch, "epochs_run": outcome.epochs_run},
        )
        if storage.is_local(spec.output_dir):
            output_dir = Path(spec.output_dir)
            for name in sorted(path.name for path in output_dir.iterdir()):
                if name != "ray":  # Ray Train's checkpoint storage: the model folder suffices
                    tracker.log_artifacts(run_id, output_dir / name)
        else:  # a run folder in an object store is the artifact: tag where it is
            tracker.set_tags(run_id, {"run_folder": spec.output_dir})
    elif outcome.traceback:
        tracker.client.log_text(run_id, outcome.traceback, "error.txt")
    tracker.end_run(run_id, "FINISHED" if outcome.ok else "FAILED")
    return run_id


def execute_runs(
    specs: Sequence[RunSpec],
    tracker: Tracker | None,
    *,
    role: str = "final",
    workers: int = 0,
    cpus_per_run: float = 1.0,
    cpus_per_worker: float = 0.5,
    parent_run_id: str | None = None,
    reuse: bool = True,
) -> list[RunOutcome]:
    """Train every spec (see the module docstring); outcomes come back in ``specs`` order.

    Args:
        specs: the runs; keys must be unique.
        tracker: where runs are logged (None: not tracked).
        role: the ``role`` tag of the runs (``final``, ``cell``, ...).
        workers: 0 = Ray tasks running the single-process trainer; N >= 1 = one Ray Train run
            of N workers at a time.
        cpus_per_run: CPUs of each task (``workers=0``); torch gets that many threads.
        cpus_per_worker: CPUs of each Train worker (``workers>=1``).
        parent_run_id: MLflow parent run of every run (a benchmark's summary run).
        reuse: take the stored outcome of an identical finished run instead of retraining.
    """
    keys = [spec.key for spec in specs]
    if len(set(keys)) != len(keys):
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"run keys must be unique; repeated: {duplicates}")
    outcomes: dict[str, RunOutcome] = {}
    total, pending = len(specs), []
    bar = progress_bar(logger, total, desc="runs", unit="run")

    def finish(outcome: RunOutcome) -> None:
        if tracker is not None:
            existing = (
                tracker.find_run(run_key=outcome.spec.key, role=role, status=STATUS_OK)
                if outcome.reused
                else None
            )
            outcome.run_id = existing or track_outcome(tracker, outcome, role, parent_run_id)
        outcomes[outcome.spec.key] = outcome
        logger.info(progress_line(outcome, len(outcomes), total))
        bar.update()

    with bar:
        for spec in specs:
            stored = finished_outcome(spec) if reuse else None
            if stored is not None:
                finish(stored)
            else:
                pending.append(spec)

        if workers > 0:
            for spec in pending:
                finish(execute_run(spec, workers=workers, cpus_per_worker=cpus_per_worker))
        elif pending:
            _execute_as_tasks(pending, cpus_per_run, finish)
    return [outcomes[key] for key in keys]


def _execute_as_tasks(
    specs: Sequence[RunSpec], cpus_per_run: float, finish: Callable[[RunOutcome], None]
) -> None:
    import ray

    task = ray.remote(num_cpus=cpus_per_run, max_retries=0)(_run_in_task)
    threads = max(1, math.floor(cpus_per_run))
    running = {task.remote(spec, threads): spec for spec in specs}
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        spec = running.pop(ready[0])
        try:
            outcome = ray.get(ready[0])
        except ray.exceptions.RayError as error:  # the task's process died (OOM, signal, ...)
            outcome = failed_outcome(spec, error)
            _write_outcome(outcome)
        finish(outcome)
