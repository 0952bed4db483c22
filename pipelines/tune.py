"""Run a tuning study: a space file + a built dataset + a budget → the best configuration.

Examples::

    python pipelines/tune.py --space tune_spaces/ig.yaml --dataset datasets/synthetic
    python pipelines/tune.py --space tune_spaces/ig.yaml --dataset datasets/synthetic \\
        --trials 16 --concurrency 2 --set backbone=gmf --set epochs=20
    python pipelines/tune.py --space tune_spaces/bsl.yaml --dataset synthetic --workers 2
    python pipelines/tune.py --smoke-test                  # tiny data, 4 IG trials, seconds
    python pipelines/tune.py --space tune_spaces/ig.yaml --dataset synthetic --trials 64 \\
        --search tpe                                       # TPE (the default from 16 trials)

``--dataset`` takes a built folder, or ``synthetic[:preset]`` / ``ml100k`` to build one first
(Ray Data) under ``<out>/datasets``. Interrupt with Ctrl-C and run the same command again to
resume: finished trials are kept. Outputs under ``--out`` (default ``outputs/studies/<name>``):
``best.json`` (the best configuration and its test metrics), ``trials.csv``, ``search.png``
(the search, and each parameter against the score) and the MLflow store stay there; the
dataset built by the command, Tune's experiment, the trials' folders and the final run go to
``--storage`` (default ``--out``), which on a cluster of several nodes must be a location every
node reaches (``s3://bucket/study``). All logic lives in ``invlearn_ray.experiments.tune``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from invlearn_ray import storage
from invlearn_ray.cli import (
    VERBOSE,
    ArgumentParser,
    add_ray_options,
    command_line,
    configure_logging,
    nonnegative_int,
    plain_name,
    positive_float,
    positive_int,
)
from invlearn_ray.config_io import parse_overrides
from invlearn_ray.experiments.datasets import DatasetChoiceError, ensure_dataset, parse_dataset
from invlearn_ray.experiments.spaces import SpaceError, load_space
from invlearn_ray.experiments.tracking import Tracker
from invlearn_ray.experiments.tune import BEST_FILE, TRIALS_FILE, StudyBudget, run_study
from invlearn_ray.experiments.tune.budget import SEARCHES, TPE_MIN_TRIALS
from invlearn_ray.experiments.tune.study_dir import SEARCH_FIGURE

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_SETTINGS = ("backbone=gmf", "epochs=2", "batch_size=64", "embedding_dim=8")
EXIT_INTERRUPTED = 130


def make_parser() -> ArgumentParser:
    defaults = StudyBudget()
    parser = ArgumentParser(
        description="Tune one study with Ray Tune (ASHA), select on validation, score test once.",
        allow_abbrev=False,
    )
    study = parser.add_argument_group("study")
    study.add_argument("--space", type=Path, help="a tune_spaces/*.yaml file")
    study.add_argument(
        "--dataset", help="built dataset folder, or synthetic[:preset] / ml100k to build one"
    )
    study.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pin a TrainConfig field in every trial (repeatable), e.g. --set backbone=gmf",
    )
    study.add_argument(
        "--name", type=plain_name, help="study name (default: the space file's name)"
    )
    study.add_argument("--smoke-test", action="store_true", help="tiny data, 4 IG trials")

    budget = parser.add_argument_group("budget")
    budget.add_argument("--trials", type=positive_int, default=defaults.trials)
    budget.add_argument("--concurrency", type=positive_int, default=defaults.concurrency)
    budget.add_argument(
        "--workers",
        type=nonnegative_int,
        default=defaults.workers,
        help="Ray Train workers per trial; 0 trains in the trial process (no Train start-up)",
    )
    budget.add_argument("--cpus-per-trial", type=positive_float, default=defaults.cpus_per_trial)
    budget.add_argument("--cpus-per-worker", type=positive_float, default=defaults.cpus_per_worker)
    budget.add_argument("--grace-period", type=positive_int, default=defaults.grace_period)
    budget.add_argument("--reduction-factor", type=positive_int, default=defaults.reduction_factor)
    budget.add_argument(
        "--search",
        choices=SEARCHES,
        default=defaults.search,
        help=f"tpe (Optuna TPE), random, or auto (default): TPE from {TPE_MIN_TRIALS} trials",
    )
    budget.add_argument(
        "--reuse-processes",
        action=argparse.BooleanOptionalAction,
        default=defaults.reuse_processes,
        help="run trials in the processes of earlier ones, ~1 s of overhead per trial instead "
        "of a new process's 7-14 s (see StudyBudget.reuse_processes)",
    )
    budget.add_argument(
        "--search-seed",
        type=int,
        default=defaults.search_seed,
        help="base seed; each study's seed also derives from its space, dataset and backbone",
    )

    output = parser.add_argument_group("output and execution")
    output.add_argument("--out", type=Path, help="study folder (default outputs/studies/<name>)")
    output.add_argument(
        "--storage",
        help="where a built dataset, Tune's experiment, trial folders and the final run go "
        "(default: --out); on a cluster of several nodes a location every node reaches, e.g. "
        "s3://bucket/study",
    )
    output.add_argument("--experiment", help="MLflow experiment (default: the study's name)")
    output.add_argument(
        "--no-final", action="store_true", help="skip the final run (no test scoring)"
    )
    add_ray_options(output)
    return parser


def resolve(argv: list[str] | None = None):
    """Parse the command line into (space, dataset spec, budget, args); errors exit with 2."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.space = args.space or REPO_ROOT / "tune_spaces" / "ig.yaml"
        args.dataset = args.dataset or "synthetic:tiny"
        args.set = [*SMOKE_SETTINGS, *args.set]
        args.trials = 4 if args.trials == StudyBudget().trials else args.trials
    if args.space is None or args.dataset is None:
        parser.error("--space and --dataset are required (or --smoke-test)")
    try:
        space = load_space(args.space)
        space = space.pinned(**parse_overrides(args.set))
        dataset = parse_dataset(args.dataset)
        budget = StudyBudget(
            trials=args.trials,
            concurrency=args.concurrency,
            workers=args.workers,
            cpus_per_trial=args.cpus_per_trial,
            cpus_per_worker=args.cpus_per_worker,
            grace_period=args.grace_period,
            reduction_factor=args.reduction_factor,
            search_seed=args.search_seed,
            search=args.search,
            reuse_processes=args.reuse_processes,
        )
    except (SpaceError, DatasetChoiceError, ValueError) as error:
        parser.error(str(error))
    args.name = args.name or space.name
    if args.out is None:
        args.out = REPO_ROOT / "outputs" / "studies" / args.name.replace("/", "-")
    return space, dataset, budget, args


@command_line
def main(argv: list[str] | None = None) -> int:
    space, dataset, budget, args = resolve(argv)
    verbosity = configure_logging(args)
    out = args.out.resolve()
    dataset.check()  # before Ray starts
    print(
        "resolved config:\n"
        + json.dumps(
            {
                "study": args.name,
                "space": space.to_dict(),
                "dataset": args.dataset,
                "budget": {**vars(budget), "search_algorithm": budget.search_algorithm},
                "out": str(out),
                "storage": args.storage or str(out),
                "final_run": not args.no_final,
            },
            indent=2,
        ),
        flush=True,
    )
    # Ray is started (or joined) only here; under `ray job submit`, RAY_ADDRESS names the cluster.
    from invlearn_ray.distributed.session import check_reachable_from_workers, ensure_ray

    ensure_ray(args.address, args.num_cpus, verbosity, args.object_store_gb)
    # Trials and the final run write their folders from whichever node runs them.
    shared = args.storage or str(out)
    check_reachable_from_workers(shared, "--storage")
    dataset_path = ensure_dataset(dataset, storage.join(shared, "datasets"))
    result = run_study(
        space,
        dataset_path,
        budget,
        out,
        name=args.name,
        tracker=Tracker(args.experiment or args.name, out),
        score_best=not args.no_final,
        verbose=1 if verbosity == VERBOSE else 0,
        storage_location=args.storage,
    )
    finished = sum(trial["status"] == "TERMINATED" for trial in result.trials)
    print(f"trials: {finished} finished, {result.failed_trials} failed -> {out / TRIALS_FILE}")
    if not result.complete:
        print("interrupted: run the same command again to resume the study", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(
        f"best {result.metric}: {result.best_valid:.4f} (trial {result.best_trial_id}, "
        f"epoch {result.best_epoch})"
    )
    print(
        "best config: "
        + json.dumps({key: result.best_config[key] for key in space.search}, sort_keys=True)
    )
    if result.final is not None:
        if result.final.ok:
            scores = ", ".join(f"{k} {result.test[k]:.4f}" for k in ("auc", "gauc", "ndcg_at_10"))
            print(f"final run (test, scored once): {scores}")
        else:
            print(f"final run FAILED: {result.final.error}", file=sys.stderr)
    print(f"results: {out / BEST_FILE}, picture: {out / SEARCH_FIGURE}")
    print(f"MLflow:  {result.tracking}")
    return 0 if result.final is None or result.final.ok else 1


if __name__ == "__main__":
    sys.exit(main())
