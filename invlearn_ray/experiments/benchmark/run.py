"""A benchmark end to end: build, configure (and tune), train every run, report, track."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invlearn_ray import storage
from invlearn_ray.experiments.benchmark.given import GivenConfigs
from invlearn_ray.experiments.benchmark.grid import (
    Cell,
    check_overrides,
    left_out_cells,
    plan_runs,
    resolve_cell_configs,
)
from invlearn_ray.experiments.benchmark.profiles import Profile
from invlearn_ray.experiments.benchmark.report import write_report
from invlearn_ray.experiments.benchmark.summary import SummaryRow, summarize
from invlearn_ray.experiments.benchmark.tuning import TunedCell, tune_cells
from invlearn_ray.experiments.datasets import DatasetSpec, ensure_dataset
from invlearn_ray.experiments.runs import RunOutcome, execute_runs
from invlearn_ray.experiments.spaces import SPACES_DIR
from invlearn_ray.experiments.tracking import Tracker
from invlearn_ray.progress import progress_bar

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkResult:
    """What a benchmark produced and where."""

    output_dir: Path
    outcomes: list[RunOutcome]
    rows: list[SummaryRow]
    files: list[Path]
    tracking: str
    summary_run_id: str
    seconds: float

    @property
    def failed(self) -> list[RunOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]


def ensure_datasets(
    profile: Profile, root: storage.Location, engine: str
) -> dict[str, tuple[DatasetSpec, str]]:
    """Every dataset of the profile at every label fraction (a dataset given by path only as
    it is), by table name, built or reused under ``root``."""
    specs = {}
    for base in profile.datasets:
        for fraction in profile.label_fractions:
            spec = base.with_label_fraction(fraction) if base.source != "path" else base
            specs.setdefault(spec.name, spec)
    datasets: dict[str, tuple[DatasetSpec, str]] = {}
    with progress_bar(logger, len(specs), desc="datasets", unit="dataset") as bar:
        for name, spec in specs.items():
            datasets[name] = (spec, ensure_dataset(spec, root, engine))
            bar.update()
    return datasets


def _summary_params(profile: Profile, overrides: Mapping[str, Any]) -> dict[str, str]:
    """The benchmark's MLflow params: what it ran."""
    return {
        "profile": profile.name,
        "datasets": ",".join(d.name for d in profile.datasets),
        "backbones": ",".join(profile.backbones),
        "methods": ",".join(profile.entries),
        "seeds": str(profile.seeds),
        "label_fractions": ",".join(f"{f:g}" for f in profile.label_fractions),
        "train": json.dumps(profile.train, sort_keys=True),
        "overrides": json.dumps(overrides, sort_keys=True),
        "tuned": str(profile.tune is not None),
    }


def run_benchmark(
    profile: Profile,
    out: str | Path,
    *,
    given: GivenConfigs | None = None,
    overrides: Mapping[str, Any] | None = None,
    experiment: str | None = None,
    cpus_per_run: float = 1.0,
    workers: int = 0,
    build_engine: str = "ray",
    spaces_dir: Path = SPACES_DIR,
    reuse: bool = True,
    tune_verbose: int = 0,
    shared_storage: str | None = None,
) -> BenchmarkResult:
    """Run a benchmark profile end to end; see the package docstring.

    Args:
        profile: what to run.
        out: the output folder.
        given: ``--configs`` overrides.
        overrides: ``--set`` overrides of every run; like ``given`` settings they also pin
            the field in tuning studies.
        experiment: MLflow experiment (default ``benchmark-<profile>``).
        cpus_per_run: CPUs per run (Ray tasks); two 1-CPU runs share a 2-core machine.
        workers: Ray Train workers per run (0: the trainer in a Ray task).
        build_engine: ``ray`` (Ray Data) or ``memory`` to build datasets.
        spaces_dir: where the tuning spaces live.
        reuse: reuse finished runs of an earlier, interrupted benchmark in ``out``.
        tune_verbose: Ray Tune's own console output in tuned profiles (0: none, each study
            logs one line per trial; 1: Tune's status table).
        shared_storage: where datasets and run folders go when every node of a cluster must
            reach them (an object-store URI, e.g. ``s3://bucket/bench``); default ``out``.
            Tables, figures and the MLflow store stay in ``out``, on the driver.

    Progress goes to this package's loggers (INFO): one line per dataset, study, trial and
    run.
    """
    started = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    given = given or GivenConfigs()
    overrides = dict(overrides or {})
    check_overrides(overrides)
    experiment = experiment or f"benchmark-{profile.name}"
    tracker = Tracker(experiment, out)
    summary_run = tracker.start_run(
        f"{profile.name} benchmark",
        {"role": "benchmark", "profile": profile.name, "git_commit": tracker.commit},
        _summary_params(profile, overrides),
    )
    try:
        shared = storage.absolute(shared_storage) if shared_storage else str(out)
        datasets = ensure_datasets(profile, storage.join(shared, "datasets"), build_engine)
        paths = {name: path for name, (_, path) in datasets.items()}
        left_out = left_out_cells(profile, paths)
        for cell in left_out:
            logger.info(f"skipped {cell.dataset}/{cell.backbone}/{cell.entry}: no observed rows")
        tuned: dict[Cell, TunedCell] = {}
        if profile.tune is not None:
            tuned = tune_cells(
                profile,
                paths,
                given,
                overrides,
                out,
                experiment,
                spaces_dir,
                tune_verbose,
                left_out,
                shared if shared_storage else None,
            )
        tuned_configs = {cell: t.config for cell, t in tuned.items()} if profile.tune else None
        configs = resolve_cell_configs(profile, datasets, given, overrides, tuned_configs, left_out)
        specs = plan_runs(profile, datasets, configs, shared)
        logger.info(
            f"{len(specs)} runs ({profile.name}): {len(datasets)} dataset(s) x "
            f"{len(profile.backbones)} backbone(s) x {len(profile.entries)} method(s) x "
            f"{profile.seeds} seed(s) + {len(profile.ratio_study)} alpha/gamma ratio(s)"
        )
        outcomes = execute_runs(
            specs,
            tracker,
            role="cell",
            workers=workers,
            cpus_per_run=cpus_per_run,
            parent_run_id=summary_run,
            reuse=reuse,
        )
        rows = summarize(outcomes)
        at_edges = {cell: t.at_edges for cell, t in tuned.items() if t.at_edges}
        files = write_report(profile, outcomes, rows, out, at_edges)
        for path in files:
            tracker.log_artifacts(summary_run, path, "figures" if path.suffix == ".png" else None)
        seconds = time.perf_counter() - started
        failed = sum(not outcome.ok for outcome in outcomes)
        tracker.log_metrics(
            summary_run, {"runs": len(outcomes), "failed_runs": failed, "wall_seconds": seconds}
        )
        tracker.end_run(summary_run, "FINISHED")
    except BaseException:
        tracker.end_run(summary_run, "FAILED")
        raise
    return BenchmarkResult(
        output_dir=out,
        outcomes=outcomes,
        rows=rows,
        files=files,
        tracking=tracker.describe(),
        summary_run_id=summary_run,
        seconds=seconds,
    )
