"""Ray Tune studies: a space file + a built dataset + a budget → the best configuration.

A room per job: :mod:`.budget` (what a study may spend), :mod:`.search` (TPE or random search,
each study's own seed), :mod:`.trial` (Tune's trainable, in the trial's process),
:mod:`.callbacks` (MLflow from the driver), :mod:`.study_dir` (the study folder's layout and
files), :mod:`.study_figure` (the study's picture) and :mod:`.study` (:func:`run_study`: search,
select on validation, score the best configuration once).
"""

from invlearn_ray.experiments.tune.budget import StudyBudget
from invlearn_ray.experiments.tune.study import StudyFailedError, run_study
from invlearn_ray.experiments.tune.study_dir import (
    BEST_FILE,
    TRIALS_FILE,
    StudyMismatchError,
    StudyResult,
    load_best_config,
)

__all__ = [
    "BEST_FILE",
    "TRIALS_FILE",
    "StudyBudget",
    "StudyFailedError",
    "StudyMismatchError",
    "StudyResult",
    "load_best_config",
    "run_study",
]
