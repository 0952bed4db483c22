"""How a large study scales: trials per minute, per-trial overhead, driver memory, MLflow time.

Runs one Ray Tune study (:func:`~invlearn_ray.experiments.tune.run_study`: IG on GMF, TPE by
default, ASHA, one MLflow run per trial) of ``--trials`` trials on the tiny synthetic preset,
``--concurrency`` at a time, and prints:

* **trials per minute** over the whole study (``run_study`` from call to return), and over its
  first and last 32 trials (by completion) — a falling rate is a per-trial cost that grows
  with the study;
* **overhead per trial**: the study's slot time (wall time × concurrency) less the trials' own
  work (each trial's ``time_total_s``: its epochs, with their validation and reports), divided
  by the trials — and where it goes: trial start and finish (the driver's span of each trial
  less its own work: process start, data load, writing its model after its last report) and
  slots left idle between trials (the driver scheduling, asking the searcher, writing MLflow,
  saving the experiment state);
* the **driver's memory**: its peak resident set during the study (sampled every 0.25 s from
  ``/proc/self/status``) and its growth from the 32nd completed trial to the end;
* **MLflow write time per trial**: time the driver spends in the tracker's calls (run start,
  per-epoch metrics, artifacts, tags, end), measured around each call.

Targets (issue 24): overhead <= 1.5 s per trial, driver memory flat (<= 50 MB growth from
trial 32 to the end). Unlike the other benchmarks this one needs Ray (it measures Ray Tune).

    python benchmarks/study_scale.py                       # 256 trials, 2 at a time
    python benchmarks/study_scale.py --trials 64 --search random
    python benchmarks/study_scale.py --trials 8 --workers 2   # each trial a Ray Train run
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.tune import Callback
from ray.tune.execution.tune_controller import TuneController
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.search_generator import SearchGenerator

from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.experiments.spaces import SPACES_DIR, load_space
from invlearn_ray.experiments.tracking import Tracker
from invlearn_ray.experiments.tune import StudyBudget, run_study
from invlearn_ray.experiments.tune.budget import SEARCHES

MB = 2**20
WINDOW = 32
"""Trials in the first/last windows of the rate, and the trial memory growth is counted from."""


def resident_bytes(field: str = "VmRSS") -> int:
    """This process's ``VmRSS`` (or ``VmHWM``) from ``/proc/self/status``, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class MemorySampler:
    """The driver's resident set every ``interval`` seconds, on a daemon thread."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), resident_bytes()))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter(), resident_bytes()))

    def peak_after(self, start: float) -> int:
        return max(rss for at, rss in self.samples if at >= start)


class TrialClock(Callback):
    """When the driver saw each trial start and end, and its resident set at each end; with
    ``trace_until``, Python's allocations (``tracemalloc``) at the ``WINDOW``-th and the
    ``trace_until``-th end."""

    def __init__(self, trace_until: int | None = None) -> None:
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.rss_at_end: list[int] = []
        self.trace_until = trace_until
        self.snapshots: list[tracemalloc.Snapshot] = []

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started.setdefault(trial.trial_id, time.perf_counter())

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._end(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(trial)

    def _end(self, trial) -> None:
        self.ended[trial.trial_id] = time.perf_counter()
        self.rss_at_end.append(resident_bytes())
        if self.trace_until and len(self.ended) in (WINDOW, self.trace_until):
            self.snapshots.append(tracemalloc.take_snapshot())

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "snapshots": []}  # saved with the experiment: keep it small

    def allocation_growth(self, top: int = 12) -> list[str]:
        """The Python allocations that grew most between the two snapshots, by file:line."""
        if len(self.snapshots) < 2:
            return []
        stats = self.snapshots[1].compare_to(self.snapshots[0], "lineno")
        return [str(stat) for stat in stats[:top]]


class TimedTracker(Tracker):
    """A :class:`Tracker` that adds up the time spent in its calls (the outermost call only:
    ``start_run`` logs params, ``log_history`` calls ``log_steps``)."""

    TIMED = ("start_run", "find_run", "log_params", "set_tags", "log_steps", "log_history")
    TIMED += ("log_metrics", "log_artifacts", "end_run")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._depth = 0
        super().__init__(*args, **kwargs)
        for name in self.TIMED:
            setattr(self, name, self._timed(getattr(self, name)))

    def _timed(self, method):
        @functools.wraps(method)
        def timed(*args, **kwargs):
            self._depth += 1
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds += time.perf_counter() - started
                    self.calls += 1

        return timed

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for name in self.TIMED:  # the bound wrappers; set again on unpickling
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for name in self.TIMED:
            setattr(self, name, self._timed(getattr(self, name)))


class DriverTimers:
    """Time the driver spends in some of Ray Tune's own steps (class methods wrapped for the
    study; the driver runs them one at a time, so the sums are driver time)."""

    STEPS = {
        "experiment state saves": (TuneController, "checkpoint"),
        "searcher draws": (SearchGenerator, "next_trial"),
        "random draws": (BasicVariantGenerator, "next_trial"),
        "trial results processed": (TuneController, "_on_training_result"),
    }

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.STEPS, 0.0)
        self._saved = []

    def __enter__(self) -> DriverTimers:
        for step, (cls, name) in self.STEPS.items():
            original = getattr(cls, name)
            self._saved.append((cls, name, original))
            setattr(cls, name, self._timed(step, original))
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, name, original in self._saved:
            setattr(cls, name, original)

    def _timed(self, step: str, method):
        @functools.wraps(method)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[step] += time.perf_counter() - started

        return timed


def tiny_dataset(folder: Path) -> Path:
    """The tiny synthetic preset (the tests' dataset), built in memory without Ray."""
    source = SourceSpec.from_synthetic(SyntheticConfig.preset("tiny"))
    build_dataset_in_memory(BuildConfig(source=source, split=SplitOptions(seed=0)), folder)
    return folder


def completion_rate(ended: list[float]) -> str:
    """Trials per minute between the first (last) ``WINDOW`` completions."""
    if len(ended) < 2 * WINDOW:
        return "n/a (fewer than 64 trials)"
    first = (WINDOW - 1) / (ended[WINDOW - 1] - ended[0]) * 60
    last = (WINDOW - 1) / (ended[-1] - ended[-WINDOW]) * 60
    return f"first {WINDOW}: {first:.1f}/min, last {WINDOW}: {last:.1f}/min"


def report(
    result,
    budget: StudyBudget,
    wall: float,
    clock: TrialClock,
    memory: MemorySampler,
    start: float,
    tracker: TimedTracker,
    timers: DriverTimers,
) -> None:
    """Print the figures of the module docstring; the overhead's parts add up to its total."""
    trials = len(result.trials)
    own = train = setup = 0.0
    spans = 0.0
    for trial in result.results:
        reports = trial.metrics_dataframe
        trial_id = trial.metrics["trial_id"]
        if reports is not None and len(reports):
            own += float(reports["time_total_s"].iloc[-1])
            train += float(reports["train_seconds"].sum())
            # The first report's iteration also holds the trial's start-up (dataset load,
            # trainer set-up): what it took beyond a later epoch's iteration.
            iterations = reports["time_this_iter_s"].to_numpy(dtype=float)
            if len(iterations) > 1:
                setup += max(0.0, iterations[0] - float(np.median(iterations[1:])))
        if trial_id in clock.started and trial_id in clock.ended:
            spans += clock.ended[trial_id] - clock.started[trial_id]
    slots = wall * budget.concurrency
    overhead = (slots - own) / trials
    start_finish = (spans - own) / trials
    first_start, last_end = min(clock.started.values()), max(clock.ended.values())
    before, after = first_start - start, start + wall - last_end
    idle = ((last_end - first_start) * budget.concurrency - spans) / trials
    ended = sorted(clock.ended.values())
    growth = None
    if len(clock.rss_at_end) > WINDOW:
        growth = max(clock.rss_at_end[WINDOW:]) - clock.rss_at_end[WINDOW - 1]
    status = {t["status"] for t in result.trials}
    print(f"\nstudy: {trials} trials ({budget.search_algorithm} search), status {sorted(status)}")
    print(
        f"  concurrency {budget.concurrency}, workers per trial {budget.workers}, "
        f"processes reused: {budget.reuse_processes}"
    )
    print(f"  wall time                 {wall:8.1f} s")
    print(f"  trials per minute         {trials / wall * 60:8.1f}   ({completion_rate(ended)})")
    print(f"  trials' own work          {own:8.1f} s (time_total_s, all trials)")
    print(f"    training                {train:8.1f} s (train_seconds)")
    print(f"    start-up (load, set-up) {setup:8.1f} s (first epoch's excess over later ones)")
    print(f"    validation and reports  {own - train - setup:8.1f} s")
    print(f"  overhead per trial        {overhead:8.2f} s   (target <= 1.5 s)")
    print(
        f"    study start, once       {before * budget.concurrency / trials:8.2f} s "
        f"({before:.1f} s before the first trial started)"
    )
    print(
        f"    study end, once         {after * budget.concurrency / trials:8.2f} s "
        f"({after:.1f} s after the last trial ended)"
    )
    print(f"    trial start and finish  {start_finish:8.2f} s")
    print(f"    slots idle between      {idle:8.2f} s")
    print(f"  vs training alone         {(slots - train) / trials:8.2f} s per trial")
    print(f"  MLflow writes per trial   {tracker.seconds / trials:8.3f} s ({tracker.calls} calls)")
    print("  driver time per trial in Tune's steps (these include the MLflow callbacks):")
    for step, seconds in timers.seconds.items():
        if seconds:
            print(f"    {step:<24}{seconds / trials:8.3f} s")
    print(f"  driver peak RSS (study)   {memory.peak_after(start) / MB:8.1f} MB")
    if growth is not None:
        print(
            f"  driver RSS growth         {growth / MB:8.1f} MB from trial {WINDOW} to the end "
            f"({clock.rss_at_end[WINDOW - 1] / MB:.1f} MB at trial {WINDOW}; target <= 50 MB)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--trials", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="Ray Train workers per trial")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--search", choices=SEARCHES, default="auto")
    parser.add_argument(
        "--reuse-processes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="StudyBudget.reuse_processes (Tune's reuse_actors; the default)",
    )
    parser.add_argument("--out", type=Path, help="study folder (default: a temporary one)")
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help=f"list the driver's Python allocations that grew from trial {WINDOW} to the end "
        "(tracemalloc: slows the driver)",
    )
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="study_scale-"))
    if (out / "study").exists():
        shutil.rmtree(out / "study")
    dataset = tiny_dataset(out / "dataset") if not (out / "dataset").exists() else out / "dataset"
    space = load_space(SPACES_DIR / "ig.yaml").pinned(
        backbone="gmf", epochs=args.epochs, batch_size=64, embedding_dim=8
    )
    budget = StudyBudget(
        trials=args.trials,
        concurrency=args.concurrency,
        workers=args.workers,
        # Two Train-backed trials at once on 2 CPUs, with a whole CPU left for Ray Data's read
        # tasks: 2 x (0.1 driver + 2 x 0.2) = 1. With every CPU reserved (0.45 per worker)
        # the reads never run and the study hangs (ray_notes.md).
        cpus_per_worker=0.2 if args.workers else StudyBudget().cpus_per_worker,
        grace_period=1,
        search=args.search,
        reuse_processes=args.reuse_processes,
    )
    # A fresh local Ray of 2 CPUs, whatever else runs on the machine (ray_notes.md).
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
    )
    tracker = TimedTracker("study-scale", out / "study")
    if args.trace_memory:
        tracemalloc.start()
    clock = TrialClock(trace_until=args.trials if args.trace_memory else None)
    with MemorySampler() as memory, DriverTimers() as timers:
        start = time.perf_counter()
        result = run_study(
            space,
            dataset,
            budget,
            out / "study",
            tracker=tracker,
            score_best=False,
            callbacks=[clock],
        )
        wall = time.perf_counter() - start
    report(result, budget, wall, clock, memory, start, tracker, timers)
    print(f"  study folder              {out / 'study'}")
    for line in clock.allocation_growth():
        print(f"  grew: {line}")
    ray.shutdown()


if __name__ == "__main__":
    main()
