"""What a study may spend and how it searches: trials, concurrency, resources, the search
algorithm (:class:`StudyBudget`)."""

from __future__ import annotations

from dataclasses import dataclass

SEARCHES = ("auto", "tpe", "random")
TPE_MIN_TRIALS = 16
"""``search='auto'`` uses TPE from this many trials: below it, TPE's random start (10 trials)
leaves it too few trials to model."""


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
        search_seed: the base seed of the search. Each study's own seed derives from it and
            the study's identity (:func:`~invlearn_ray.experiments.tune.search.study_seed`),
            so two studies draw different configurations and a re-run draws the same ones.
        search: ``tpe`` (Optuna's TPE: later trials sample where earlier ones scored well),
            ``random``, or ``auto``: TPE for studies of at least :data:`TPE_MIN_TRIALS`
            trials, random search below (TPE's first 10 trials are random draws anyway).
        reuse_processes: run each trial in a process an earlier trial ran in (Tune's
            ``reuse_actors``, the default) instead of a new one. Measured
            (benchmarks/study_scale.py, tiny trials, 2 cores): 7.1-14.0 s of overhead per
            trial -> 0.8-1.2 s, nearly all of it a new Python process importing torch and
            Ray. A trial that is interrupted between a report and Tune's fetch of its
            checkpoint reports that epoch again when it resumes (seen with reused processes
            and after a lost node); the study counts each epoch once
            (:func:`~invlearn_ray.experiments.tune.study.unique_epochs`).
        trial_retries: restarts of a trial whose process or node died (a spot worker taken
            away, Ray's memory monitor, an error), each from the trial's last checkpoint;
            after them it is that trial's failure, and the study goes on.
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
    search: str = "auto"
    reuse_processes: bool = True
    trial_retries: int = 2

    def __post_init__(self) -> None:
        for name in ("trials", "concurrency", "grace_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"StudyBudget.{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"StudyBudget.workers must be >= 0, got {self.workers}")
        if self.trial_retries < 0:
            raise ValueError(f"StudyBudget.trial_retries must be >= 0, got {self.trial_retries}")
        for name in ("cpus_per_trial", "cpus_per_worker", "driver_cpus"):
            if not getattr(self, name) > 0:
                raise ValueError(f"StudyBudget.{name} must be > 0, got {getattr(self, name)}")
        if self.search not in SEARCHES:
            raise ValueError(f"StudyBudget.search must be one of {list(SEARCHES)}: {self.search!r}")
        if self.reduction_factor < 2:
            raise ValueError(f"StudyBudget.reduction_factor must be >= 2: {self.reduction_factor}")

    def trial_resources(self) -> dict[str, float]:
        return {"CPU": self.cpus_per_trial if self.workers == 0 else self.driver_cpus}

    @property
    def search_algorithm(self) -> str:
        """``tpe`` or ``random``: what ``search`` resolves to for this many trials."""
        if self.search != "auto":
            return self.search
        return "tpe" if self.trials >= TPE_MIN_TRIALS else "random"
