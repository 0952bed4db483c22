"""Run outcomes for the report tests: made up, no training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from invlearn_ray.experiments.runs import RunOutcome, RunSpec
from invlearn_ray.methods.registry import METHODS
from invlearn_ray.training.config import TrainConfig


@pytest.fixture
def make_outcome(tmp_path: Path) -> Callable[..., RunOutcome]:
    """``make_outcome(entry, seed, test, ok=True, ratio=0.1)``: a run of dataset ``d`` on GMF;
    IG's own ratio is 0.1, any other ratio makes it a run of the α/γ study."""

    def make(entry: str, seed: int, test: dict, ok: bool = True, ratio: float = 0.1):
        group = "main" if ratio == 0.1 else "ratio_study"
        spec = RunSpec(
            key=f"d/gmf/{entry}@{ratio}/seed{seed}",
            dataset="unused",
            dataset_name="d",
            config=TrainConfig(
                method=entry if entry in METHODS else "sl", seed=seed, dual_lr_ratio=ratio
            ),
            output_dir=str(tmp_path / f"{entry}{ratio}" / str(seed)),
            tags={"entry": entry, "group": group},
        )
        if not ok:
            return RunOutcome(spec=spec, status="failed", error="TrainingDiverged: nan")
        return RunOutcome(spec=spec, status="ok", test=test)

    return make
