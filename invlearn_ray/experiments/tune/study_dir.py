"""The study folder: its layout, what it is (``study.json``), and its result files.

::

    <study_dir>/study.json      what this study is (space, dataset, budget)
    <study_dir>/tune/trials/    Tune's experiment (its own layout; read through Tune's API)
    <study_dir>/trial_outputs/<trial id>/   a finished trial's run folder without test
                                scores: selected model's weights, metrics.json (history),
                                direction log (Train-backed trials: also Train's checkpoints)
    <study_dir>/trials.csv      one row per trial: status, parameters, best validation score
    <study_dir>/best.json       the best configuration, its trial, and its test metrics
    <study_dir>/search.png      the search: best-so-far score by trial, each parameter's scores
    <study_dir>/final/          the final run's model, metrics and direction log

``tune/``, ``trial_outputs/`` and ``final/`` are written by trials and runs on any node: they
live in the study's *storage* (:func:`~invlearn_ray.experiments.tune.study.run_study`'s
``storage_location``, default the study folder itself), the rest on the driver.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from invlearn_ray.errors import UserError
from invlearn_ray.experiments.runs import RunOutcome
from invlearn_ray.experiments.spaces import StudySpace
from invlearn_ray.experiments.tune.budget import StudyBudget
from invlearn_ray.training.run_folder import finite_or_none

STUDY_FILE = "study.json"
BEST_FILE = "best.json"
TRIALS_FILE = "trials.csv"
SEARCH_FIGURE = "search.png"
TUNE_DIR = "tune"
EXPERIMENT = "trials"
FINAL_DIR = "final"
TRIAL_OUTPUTS = "trial_outputs"


class StudyMismatchError(RuntimeError, UserError):
    """A study folder holds another study (space, dataset or budget differ)."""


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
    results: tune.ResultGrid | None = None
    """Tune's own results (every trial's reports, errors); None for a result read from disk."""

    @property
    def test(self) -> dict[str, float]:
        return self.final.test if self.final is not None and self.final.ok else {}


def study_identity(space: StudySpace, dataset: str, budget: StudyBudget) -> dict[str, Any]:
    """What makes two runs of a study the same study (stored in ``study.json``)."""
    return {"space": space.to_dict(), "dataset": dataset, "budget": asdict(budget)}


def claim_study_dir(study_dir: Path, identity: dict[str, Any]) -> None:
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


def write_trials_csv(path: Path, trials: list[dict[str, Any]], space: StudySpace) -> None:
    columns = ["trial_id", "status", *space.search, "best_valid", "best_epoch", "epochs_reported"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns, "error"])
        for trial in trials:
            row = [trial.get(c, trial["params"].get(c)) for c in columns]
            writer.writerow([*row, trial["error"] or ""])


def write_best(path: Path, result: StudyResult) -> None:
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
    path.write_text(json.dumps(finite_or_none(values), indent=2) + "\n")


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
