"""What a study may spend: trials, concurrency and resources (:class:`StudyBudget`)."""

from __future__ import annotations

from dataclasses import dataclass


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
