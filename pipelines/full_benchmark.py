"""The main job: every method × backbone × dataset × seed, one table, the paper's figures, MLflow.

Examples::

    python pipelines/full_benchmark.py --quick                  # minutes; the README's main job
    python pipelines/full_benchmark.py --smoke-test             # seconds (tiny data)
    python pipelines/full_benchmark.py --profile standard       # tuned, synthetic + ML-100K
    python pipelines/full_benchmark.py --profile sparse-sweep   # label fractions 100/30/10/3 %
    python pipelines/full_benchmark.py --quick --backbones gmf,neumf --methods ns,idl,ig
    python pipelines/full_benchmark.py --quick --datasets datasets/ml100k --configs my.yaml

    # on a Ray cluster (the local flow is in the README):
    ray job submit --working-dir . -- python pipelines/full_benchmark.py --quick \\
        --out "$PWD/outputs/quick-job"   # its own folder: in outputs/quick every run is reused

Outputs under ``--out`` (default ``outputs/<profile>``): ``results.md`` / ``results.csv`` (the
table), ``runs.csv`` (every seed), ``annotation.md``, ``figures/*.png``, and the MLflow store
(``mlflow.db``; ``MLFLOW_TRACKING_URI`` points it elsewhere). Exit status: 0, or 3 when some
runs failed (they are in the table with their error). All logic lives in
``invlearn_ray.experiments.benchmark``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
import time
from pathlib import Path

from invlearn_ray.cli import (
    VERBOSE,
    ArgumentParser,
    add_ray_options,
    comma_floats,
    comma_names,
    command_line,
    configure_logging,
    nonnegative_int,
    positive_float,
    positive_int,
)
from invlearn_ray.config_io import parse_overrides
from invlearn_ray.experiments.benchmark import (
    ENTRIES,
    PROFILES,
    BenchmarkConfigError,
    BenchmarkInterrupted,
    check_overrides,
    load_given_configs,
    parse_dataset,
    run_benchmark,
)
from invlearn_ray.experiments.tune import StudyBudget
from invlearn_ray.experiments.tune.budget import SEARCHES, TPE_MIN_TRIALS

REPO_ROOT = Path(__file__).resolve().parents[1]
EXIT_RUNS_FAILED = 3


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(
        description="Run the full benchmark: table (CSV + Markdown), figures, MLflow runs.",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="profiles:\n"
        + "\n".join(
            textwrap.fill(
                profile.description,
                width=98,
                initial_indent=f"  {name:<13} ",
                subsequent_indent=" " * 16,
            )
            for name, profile in PROFILES.items()
        ),
    )
    what = parser.add_argument_group("what to run")
    chosen = what.add_mutually_exclusive_group()
    chosen.add_argument("--profile", choices=sorted(PROFILES), help="default: quick")
    chosen.add_argument("--quick", action="store_true", help="= --profile quick")
    chosen.add_argument("--smoke-test", action="store_true", help="= --profile tiny")
    what.add_argument(
        "--datasets",
        type=comma_names,
        help="comma-separated: synthetic[:preset], ml100k[:split folder], or built folders",
    )
    what.add_argument("--backbones", type=comma_names, help="comma-separated backbones")
    what.add_argument(
        "--methods",
        type=comma_names,
        help=f"comma-separated, from {', '.join(ENTRIES)} (pipelines/train.py --help says what "
        "each method does)",
    )
    what.add_argument("--seeds", type=positive_int, help="seeds 0..N-1 per row")
    what.add_argument("--label-fractions", type=comma_floats, help="e.g. 1,0.3,0.1,0.03")
    what.add_argument(
        "--ratios", type=comma_floats, help="IG alpha/gamma study values ('' to skip the study)"
    )

    config = parser.add_argument_group("configurations")
    config.add_argument("--epochs", type=positive_int, help="max epochs of every run")
    config.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="TrainConfig value for every run (repeatable), e.g. --set batch_size=512",
    )
    config.add_argument("--configs", type=Path, help="YAML of given configs by method scope")
    tuning = config.add_mutually_exclusive_group()
    tuning.add_argument("--tune", action="store_true", help="tune every row (8 trials default)")
    tuning.add_argument("--no-tune", action="store_true", help="use given configs only")
    config.add_argument("--trials", type=positive_int, help="tuning trials per row")
    config.add_argument("--concurrency", type=positive_int, help="trials at once")
    config.add_argument(
        "--search",
        choices=SEARCHES,
        help=f"tuning search: tpe, random, or auto (default: TPE from {TPE_MIN_TRIALS} trials)",
    )

    run = parser.add_argument_group("execution and output")
    run.add_argument(
        "--out",
        type=Path,
        help="output folder: tables, figures, MLflow (default outputs/<profile>)",
    )
    run.add_argument(
        "--storage",
        help="where datasets and run folders go (default: --out); on a cluster of several "
        "nodes a location every node reaches, e.g. s3://bucket/bench",
    )
    run.add_argument("--experiment", help="MLflow experiment (default benchmark-<profile>)")
    run.add_argument(
        "--cpus-per-run", type=positive_float, default=1.0, help="CPUs per run (default 1)"
    )
    run.add_argument(
        "--workers",
        type=nonnegative_int,
        default=0,
        help="Ray Train workers per run; 0 (default) trains in a Ray task",
    )
    run.add_argument(
        "--build-engine",
        choices=("ray", "memory"),
        default="ray",
        help="how datasets are built: ray (Ray Data, the default) or memory (in this process, "
        "the same rows)",
    )
    run.add_argument(
        "--no-reuse",
        action="store_true",
        help="retrain every run; by default a run that an earlier invocation with the same --out "
        "finished (same dataset and config) is reused, not retrained",
    )
    add_ray_options(run)
    return parser


def resolve(argv: list[str] | None = None):
    """Parse the command line into (profile, options); errors exit with status 2."""
    parser = make_parser()
    args = parser.parse_args(argv)
    name = "quick" if args.quick else "tiny" if args.smoke_test else args.profile or "quick"
    profile = PROFILES[name]
    changes = {}
    try:
        if args.datasets:
            changes["datasets"] = tuple(parse_dataset(text) for text in args.datasets)
        if args.backbones:
            changes["backbones"] = args.backbones
        if args.methods:
            changes["entries"] = args.methods
        if args.seeds:
            changes["seeds"] = args.seeds
        if args.label_fractions:
            changes["label_fractions"] = args.label_fractions
        if args.ratios is not None:
            changes["ratio_study"] = args.ratios
        overrides = parse_overrides(args.set)
        check_overrides(overrides)
        if args.epochs:
            overrides["epochs"] = args.epochs
        budget = profile.tune
        if args.tune and budget is None:
            budget = StudyBudget()
        if args.no_tune:
            budget = None
        if budget is not None and (args.trials or args.concurrency or args.search):
            budget = dataclasses.replace(
                budget,
                trials=args.trials or budget.trials,
                concurrency=args.concurrency or budget.concurrency,
                search=args.search or budget.search,
            )
        elif args.trials or args.concurrency or args.search:
            parser.error("--trials, --concurrency and --search apply to tuned runs (--tune)")
        changes["tune"] = budget
        profile = profile.replace(**changes)
        given = load_given_configs(args.configs) if args.configs else None
    except (BenchmarkConfigError, ValueError) as error:
        parser.error(str(error))
    if args.out is None:
        args.out = REPO_ROOT / "outputs" / profile.name
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; choose a folder")
    return profile, given, overrides, args


@command_line
def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    profile, given, overrides, args = resolve(argv)
    verbosity = configure_logging(args)
    # Before Ray starts: every dataset folder verified, every source file present.
    for dataset in profile.datasets:
        dataset.check()
    resolved = {
        "profile": profile.name,
        "datasets": [dataclasses.asdict(d) for d in profile.datasets],
        "label_fractions": profile.label_fractions,
        "backbones": profile.backbones,
        "methods": profile.entries,
        "seeds": profile.seeds,
        "train": profile.train,
        "overrides": overrides,
        "configs": str(args.configs) if args.configs else None,
        "ratio_study": profile.ratio_study,
        "tune": {
            **dataclasses.asdict(profile.tune),
            "search_algorithm": profile.tune.search_algorithm,
        }
        if profile.tune
        else None,
        "out": str(args.out.resolve()),
        "storage": args.storage or str(args.out.resolve()),
        "cpus_per_run": args.cpus_per_run,
        "workers": args.workers,
    }
    print("resolved config:\n" + json.dumps(resolved, indent=2), flush=True)

    # Ray is started (or joined) only here; under `ray job submit`, RAY_ADDRESS names the cluster.
    from invlearn_ray.distributed.session import check_reachable_from_workers, ensure_ray

    ensure_ray(args.address, args.num_cpus, verbosity, args.object_store_gb)
    # Datasets and runs are written by whichever node builds or trains them.
    check_reachable_from_workers(args.storage or str(args.out), "--storage")
    try:
        result = run_benchmark(
            profile,
            args.out,
            given=given,
            overrides=overrides,
            experiment=args.experiment,
            cpus_per_run=args.cpus_per_run,
            workers=args.workers,
            build_engine=args.build_engine,
            reuse=not args.no_reuse,
            tune_verbose=1 if verbosity == VERBOSE else 0,
            shared_storage=args.storage,
        )
    except BenchmarkInterrupted as error:
        print(f"interrupted: {error}", file=sys.stderr)
        return 130
    print()
    print((result.output_dir / "results.md").read_text())
    print(f"table:   {result.output_dir / 'results.md'} (and results.csv, runs.csv)")
    figures = [path for path in result.files if path.suffix == ".png"]
    print(f"figures: {len(figures)} in {result.output_dir / 'figures'}")
    print(f"MLflow:  {result.tracking}, summary run {result.summary_run_id}")
    if result.failed:
        print(f"{len(result.failed)} of {len(result.outcomes)} runs FAILED (see the table)")
    print(f"wall time: {time.perf_counter() - started:.1f} s", flush=True)
    return EXIT_RUNS_FAILED if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
