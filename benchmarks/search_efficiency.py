"""Sample efficiency of a study's search: TPE against random search at equal trials (issue 24).

For every backbone x method x search x search seed, runs one Ray Tune study
(:func:`~invlearn_ray.experiments.tune.run_study`, ASHA, the product's space
``tune_spaces/<method>.yaml`` pinned as the sparse-sweep profile pins a cell:
:func:`~invlearn_ray.experiments.benchmark.tuning.study_pins`) on ML-100K at 10 % of the
training labels, and prints one table:

* **best validation GAUC after k trials** (k = 8, 16, 32, ... up to ``--trials``): the best
  epoch score of the first k trials *in the order the searcher drew them* (Tune's draw
  counter), mean ± sd over the search seeds. The first k trials of a study of n trials are
  the study of k trials it would have been: the searcher and ASHA only see trials that came
  before (up to which of two concurrent trials ends first);
* **TPE reaches random's best**: the trial count at which TPE's best-so-far first reaches
  random search's mean best after all trials, for the mean curve over seeds and per seed
  (``>n``: never);
* **test AUC / GAUC of the final run**: the study's chosen configuration trained once more
  and scored once on test (what ``run_study`` returns).

Then, for IG, the configuration a 16-trial study would choose (the best of the first 16
trials, scored once on test) beside the issue-6 given configuration
(``pipelines/configs/sparse_ig.yaml``) trained at seeds 0..seeds-1.

Targets (issue 24): TPE reaches random search's 64-trial best in <= 32 trials; the tuned IG
at 16 trials is at least as good on test as the given configuration.

Trials run two at a time in reused processes (``StudyBudget.reuse_processes``: ~1 s of
overhead per trial instead of ~14 s; fine for a benchmark, whose studies are not resumed
mid-trial). Studies, datasets and runs are kept under ``--out``: running the same command
again reuses finished studies and reprints the table. Unlike most benchmarks this one needs
Ray (it measures Ray Tune studies).

    python benchmarks/search_efficiency.py --backbones gmf      # 12 studies: 47 min
    python benchmarks/search_efficiency.py    # both backbones, 24 studies: about 1.5 h
    python benchmarks/search_efficiency.py --backbones gmf --methods ig --seeds 1 --trials 8

Measured on 2 cores shared with other work (load average 10-36): a 64-trial study of GMF
takes 3-4.5 min with its final run, the 12 GMF studies 47 min.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import ray
from ray.tune import ResultGrid
from search_curves import (  # beside this script (its directory is sys.path[0])
    best_after,
    best_so_far,
    checkpoints,
    draw_index,
    first_reaching,
    mean_curve,
    mean_sd,
)

from invlearn_ray.cli import ArgumentParser, configure_logging, positive_int, set_third_party_levels
from invlearn_ray.data.manifest import Manifest
from invlearn_ray.experiments.benchmark.given import load_given_configs
from invlearn_ray.experiments.benchmark.profiles import get_profile
from invlearn_ray.experiments.benchmark.tuning import study_pins
from invlearn_ray.experiments.datasets import ensure_dataset, parse_dataset
from invlearn_ray.experiments.runs import RunOutcome, RunSpec, execute_runs
from invlearn_ray.experiments.spaces import SPACES_DIR, StudySpace, load_space
from invlearn_ray.experiments.tracking import Tracker
from invlearn_ray.experiments.tune import StudyBudget, run_study
from invlearn_ray.training.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
PROFILE = "sparse-sweep"
"""The profile whose training settings (30 epochs, patience 5) and pins the studies use."""
GIVEN_FILE = REPO_ROOT / "pipelines" / "configs" / "sparse_ig.yaml"
GIVEN_TRIALS = 16
"""The study size the given configuration is compared at (issue 24's second target)."""
TPE_TARGET_TRIALS = 32
"""TPE should reach random search's best after all trials within this many trials."""
SEARCHES = ("tpe", "random")
TIMING_FILE = "search_efficiency_time.json"
"""A study's wall time (trials and final run) when it ran, kept for the table of a re-run."""


@dataclass
class StudyRow:
    """One study's outcome: its trials' scores in draw order and its chosen runs' test scores."""

    backbone: str
    method: str
    search: str
    seed: int
    scores: list[float | None]
    test: dict[str, float]
    minutes: float
    failed: int = 0
    test_at: dict[int, dict[str, float]] = field(default_factory=dict)
    """Test scores of the configuration a study of k trials would choose (k = GIVEN_TRIALS)."""

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "test_at": {str(k): v for k, v in self.test_at.items()}}


def draw_order(results: ResultGrid) -> dict[str, int]:
    """Each trial's draw index (:func:`draw_index`), by trial id."""
    order = {}
    for result in results:
        trial_id = result.metrics["trial_id"]
        order[trial_id] = draw_index(trial_id, PurePosixPath(result.path).name)
    return order


def study_space(method: str, backbone: str, dataset_path: Path) -> StudySpace:
    """The product's space for ``method``, pinned as the sparse-sweep profile pins its cell."""
    space = load_space(SPACES_DIR / f"{method}.yaml")
    pins = study_pins(get_profile(PROFILE), method, backbone, space, {}, dataset_path)
    return space.pinned(**pins)


def score_config(
    key: str,
    config: TrainConfig,
    dataset_path: Path,
    dataset_name: str,
    output_dir: Path,
    tracker: Tracker,
    role: str,
) -> dict[str, float]:
    """Train ``config`` once and return its test scores (a stored identical run is reused)."""
    spec = RunSpec(key, str(dataset_path), dataset_name, config, str(output_dir))
    (outcome,) = execute_runs([spec], tracker, role=role)
    return outcome_test(outcome)


def outcome_test(outcome: RunOutcome | None) -> dict[str, float]:
    if outcome is None or not outcome.ok:
        return {}
    return {"auc": outcome.test["auc"], "gauc": outcome.test["gauc"], **_valid(outcome)}


def _valid(outcome: RunOutcome) -> dict[str, float]:
    return {"valid_gauc": outcome.valid["gauc"]} if "gauc" in outcome.valid else {}


def run_one_study(
    backbone: str,
    method: str,
    search: str,
    seed: int,
    args: Any,
    dataset_path: Path,
    dataset_name: str,
    tracker: Tracker,
) -> StudyRow:
    """Run (or reuse) one study and score its choices on test."""
    space = study_space(method, backbone, dataset_path)
    budget = StudyBudget(
        trials=args.trials,
        concurrency=args.concurrency,
        search=search,
        search_seed=seed,
        reuse_processes=True,
    )
    name = f"{dataset_name}/{backbone}/{method}/{search}/seed{seed}"
    study_dir = args.out / "studies" / backbone / method / search / f"seed{seed}"
    timing = study_dir / TIMING_FILE
    started = time.perf_counter()
    result = run_study(space, dataset_path, budget, study_dir, name=name, tracker=tracker)
    if not result.complete:
        sys.exit(f"study {study_dir} was interrupted; run the same command again to resume")
    if not timing.is_file():  # the first call that finished the study measured it
        timing.write_text(json.dumps({"minutes": (time.perf_counter() - started) / 60}))
    minutes = json.loads(timing.read_text())["minutes"]
    order = draw_order(result.results)
    trials = sorted(result.trials, key=lambda trial: order[trial["trial_id"]])
    scores = [trial["best_valid"] for trial in trials]
    row = StudyRow(
        backbone,
        method,
        search,
        seed,
        scores,
        outcome_test(result.final),
        minutes,
        failed=result.failed_trials,
    )
    if method == "ig" and not args.no_given and args.trials >= GIVEN_TRIALS:
        chosen = max(
            (trial for trial in trials[:GIVEN_TRIALS] if trial["best_valid"] is not None),
            key=lambda trial: trial["best_valid"],
            default=None,
        )
        if chosen is not None and chosen["trial_id"] == result.best_trial_id:
            row.test_at[GIVEN_TRIALS] = row.test  # the final run trained this very config
        elif chosen is not None:
            row.test_at[GIVEN_TRIALS] = score_config(
                f"{name}/final@{GIVEN_TRIALS}",
                space.trial_config(chosen["params"]),
                dataset_path,
                dataset_name,
                study_dir / f"final_at_{GIVEN_TRIALS}",
                tracker,
                role=f"final@{GIVEN_TRIALS}",
            )
    return row


def given_runs(
    backbone: str,
    seeds: int,
    args: Any,
    dataset_path: Path,
    dataset_name: str,
    tracker: Tracker,
) -> list[dict[str, float]]:
    """Test scores of the given IG configuration at training seeds 0..seeds-1, with the
    profile's training settings under it (as the full benchmark's ``--no-tune`` runs)."""
    given = load_given_configs(args.given).for_run("ig", backbone)
    profile = get_profile(PROFILE)
    specs = []
    for seed in range(seeds):
        values = {**profile.train, **given, "backbone": backbone, "method": "ig", "seed": seed}
        specs.append(
            RunSpec(
                f"{dataset_name}/{backbone}/ig/given/seed{seed}",
                str(dataset_path),
                dataset_name,
                TrainConfig.from_dict(values),
                str(args.out / "given" / backbone / f"seed{seed}"),
            )
        )
    return [outcome_test(outcome) for outcome in execute_runs(specs, tracker, role="given")]


def print_table(rows: Sequence[StudyRow], trials: int, dataset_name: str) -> None:
    counts = checkpoints(trials)
    seeds = sorted({row.seed for row in rows})
    print(
        f"\n{dataset_name}: best validation GAUC after k trials (trials in the order drawn; "
        f"mean ± sd over search seeds {seeds}), test scores of each study's final run"
    )
    header = ["backbone", "method", "search", *[f"@{k}" for k in counts]]
    header += [f"TPE reaches random@{trials}", "test AUC", "test GAUC", "min/study", "failed"]
    lines = [header]
    groups: dict[tuple[str, str], dict[str, list[StudyRow]]] = {}
    for row in rows:
        groups.setdefault((row.backbone, row.method), {}).setdefault(row.search, []).append(row)
    verdicts = []
    for (backbone, method), by_search in groups.items():
        random_rows = by_search.get("random", [])
        target = None
        if random_rows:
            target = statistics.fmean(best_after(r.scores, trials) or 0.0 for r in random_rows)
        for search in SEARCHES:
            studies = by_search.get(search, [])
            if not studies:
                continue
            reaches = ""
            if search == "tpe" and target is not None:
                curves = [best_so_far(r.scores) for r in studies]
                at_mean = first_reaching(mean_curve(curves), target)
                per_seed = [first_reaching(curve, target) for curve in curves]
                shown = ", ".join(str(k) if k else f">{trials}" for k in per_seed)
                reaches = f"{at_mean or f'>{trials}'} (seeds: {shown})"
                verdicts.append((backbone, method, at_mean, per_seed))
            lines.append(
                [backbone, method, search]
                + [mean_sd([best_after(r.scores, k) for r in studies]) for k in counts]
                + [
                    reaches,
                    mean_sd([r.test.get("auc") for r in studies]),
                    mean_sd([r.test.get("gauc") for r in studies]),
                    f"{statistics.fmean(r.minutes for r in studies):.1f}",
                    str(sum(r.failed for r in studies)),
                ]
            )
    _print_lines(lines)
    print(
        f"'TPE reaches random@{trials}': the trial count at which TPE's mean best-so-far "
        f"validation GAUC reaches random search's mean best after {trials} trials (per seed in "
        "brackets); min/study includes the final run."
    )
    for backbone, method, at_mean, per_seed in verdicts:
        met = at_mean is not None and at_mean <= TPE_TARGET_TRIALS
        within = sum(k is not None and k <= TPE_TARGET_TRIALS for k in per_seed)
        print(
            f"target TPE <= {TPE_TARGET_TRIALS} trials, {backbone}/{method}: "
            f"{'met' if met else 'missed'} (mean curve: {at_mean or f'>{trials}'}; "
            f"{within} of {len(per_seed)} seeds within {TPE_TARGET_TRIALS})"
        )


def print_given(
    rows: Sequence[StudyRow], given: dict[str, list[dict[str, float]]], given_file: Path
) -> None:
    print(
        f"\nIG: the configuration a {GIVEN_TRIALS}-trial study chooses (best of its first "
        f"{GIVEN_TRIALS} trials, trained once more, scored once on test; mean ± sd over search "
        f"seeds) vs the given configuration ({given_file.name}, training seeds 0..n-1)"
    )
    lines = [["backbone", "configuration", "runs", "valid GAUC", "test AUC", "test GAUC"]]
    verdicts = []
    for backbone, given_scores in given.items():
        lines.append(
            [backbone, f"given ({given_file.name})", str(len(given_scores))]
            + [mean_sd([s.get(m) for s in given_scores]) for m in ("valid_gauc", "auc", "gauc")]
        )
        for search in SEARCHES:
            tuned = [
                r.test_at[GIVEN_TRIALS]
                for r in rows
                if r.backbone == backbone and r.method == "ig" and r.search == search
                if GIVEN_TRIALS in r.test_at
            ]
            if not tuned:
                continue
            lines.append(
                [backbone, f"tuned @{GIVEN_TRIALS} ({search})", str(len(tuned))]
                + [mean_sd([s.get(m) for s in tuned]) for m in ("valid_gauc", "auc", "gauc")]
            )
            verdicts.append((backbone, search, tuned, given_scores))
    _print_lines(lines)
    for backbone, search, tuned, given_scores in verdicts:
        better = []
        for metric in ("auc", "gauc"):
            tuned_mean = statistics.fmean(s[metric] for s in tuned if metric in s)
            given_mean = statistics.fmean(s[metric] for s in given_scores if metric in s)
            better.append(tuned_mean >= given_mean)
        print(
            f"target tuned IG @{GIVEN_TRIALS} ({search}) >= given on test AUC and GAUC, "
            f"{backbone}: {'met' if all(better) else 'missed'}"
        )


def _print_lines(lines: list[list[str]]) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--trials", type=positive_int, default=64, help="trials per study")
    parser.add_argument("--seeds", type=positive_int, default=3, help="search seeds 0..n-1")
    parser.add_argument("--backbones", default="gmf,biased_mf", help="comma-separated")
    parser.add_argument(
        "--methods", default="ig,none", help="comma-separated spaces of tune_spaces/"
    )
    parser.add_argument("--searches", default=",".join(SEARCHES), help="comma-separated")
    parser.add_argument(
        "--dataset", default="ml100k", help="synthetic[:preset], ml100k, or a built folder"
    )
    parser.add_argument(
        "--label-fraction", type=float, default=0.1, help="share of training labels kept"
    )
    parser.add_argument("--concurrency", type=positive_int, default=2, help="trials at once")
    parser.add_argument("--given", type=Path, default=GIVEN_FILE, help="given IG configuration")
    parser.add_argument(
        "--no-given", action="store_true", help="skip the comparison with the given IG config"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "outputs" / "search_efficiency",
        help="studies, runs, datasets and MLflow store (finished studies are reused)",
    )
    args = parser.parse_args()
    verbosity = configure_logging(args)
    args.out = args.out.resolve()
    backbones = args.backbones.split(",")
    methods = args.methods.split(",")
    searches = args.searches.split(",")
    unknown = sorted(set(searches) - set(SEARCHES))
    if unknown:
        parser.error(f"--searches: unknown {unknown}; valid: {list(SEARCHES)}")

    spec = parse_dataset(args.dataset)
    if spec.source != "path":
        spec = spec.with_label_fraction(args.label_fraction)
    # A fresh local Ray of 2 CPUs, whatever else runs on the machine (ray_notes.md).
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    set_third_party_levels(verbosity)
    dataset_path = Path(ensure_dataset(spec, args.out / "datasets", engine="memory"))
    dataset_name = Manifest.read(dataset_path).name
    tracker = Tracker("search-efficiency", args.out)

    started = time.perf_counter()
    given = {}
    if "ig" in methods and not args.no_given and args.trials >= GIVEN_TRIALS:
        for backbone in backbones:
            given[backbone] = given_runs(
                backbone, args.seeds, args, dataset_path, dataset_name, tracker
            )
    rows = []
    # Seeds outermost: a grid cut short still has every study kind at the seeds it finished.
    for seed in range(args.seeds):
        for backbone in backbones:
            for method in methods:
                for search in searches:
                    rows.append(
                        run_one_study(
                            backbone,
                            method,
                            search,
                            seed,
                            args,
                            dataset_path,
                            dataset_name,
                            tracker,
                        )
                    )
    wall = time.perf_counter() - started
    (args.out / "search_efficiency.json").write_text(
        json.dumps({"rows": [row.to_json() for row in rows], "given": given}, indent=1)
    )
    print_table(rows, args.trials, dataset_name)
    if given:
        print_given(rows, given, args.given)
    print(
        f"\n{len(rows)} studies of {args.trials} trials, {args.concurrency} at a time in reused "
        f"processes (StudyBudget.reuse_processes), on {dataset_name}: {wall / 60:.1f} min "
        f"(this call; reused studies cost ~0). Everything under {args.out}"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
