"""Train one method on one backbone on a built dataset: one process, or N Ray Train workers.

Examples::

    python pipelines/train.py --smoke-test                       # tiny synthetic, 2 epochs
    python pipelines/train.py --dataset datasets/ml100k --method ig --backbone gmf
    python pipelines/train.py --dataset datasets/ml100k --method ig --workers 2 \\
        --set dual_lr_ratio=10 --set step_rule=adam --out runs/ml100k-ig
    python pipelines/train.py --dataset datasets/ml1m --method bsl --gpu

``--workers 0`` (the default) trains in this process without Ray; ``--workers N`` runs N
data-parallel Ray Train workers (a local Ray is started unless ``--address`` names a cluster).
Every ``TrainConfig`` option can be set with ``--set KEY=VALUE``. The run folder appears whole
when the run is complete; a finished run already in ``--out`` is refused unless ``--overwrite``.
The run ends by printing where its model (``<out>/model``, self-contained:
``pipelines/recommend.py --model`` reads it), metrics (``<out>/metrics.json``) and MLflow run
are: one run in the experiment ``train`` (``--experiment``), in the SQLite store beside the run
folder (``<out>/../mlflow.db``, so all runs under ``runs/`` share one) unless
``MLFLOW_TRACKING_URI`` names another; params, per-epoch metrics, test metrics, tags and the
run folder as artifacts, as the benchmark logs each of its runs. All the training logic lives in
``invlearn_ray.distributed.train``.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from invlearn_ray import storage
from invlearn_ray.cli import (
    ArgumentParser,
    add_ray_options,
    command_line,
    configure_logging,
    nonnegative_int,
)
from invlearn_ray.config_io import parse_overrides
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import DATA_SEED
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.distributed.train import check_run, run_training
from invlearn_ray.experiments.tracking import Tracker
from invlearn_ray.methods.registry import METHOD_SPECS, METHODS, readers_of, unread_settings
from invlearn_ray.models.backbones import BACKBONES
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.run_folder import (
    DIRECTION_LOG_FILE,
    METRICS_FILE,
    MODEL_DIR,
    check_can_publish,
    read_metrics,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS_ROOT = REPO_ROOT / "runs"
SMOKE_TEST = {"epochs": 2, "batch_size": 64, "test_batch_size": 32, "embedding_dim": 8}
"""``--smoke-test`` defaults (explicit options still win) — seconds on a laptop."""
DEFAULT_EXPERIMENT = "train"
"""The MLflow experiment of ``train.py`` runs (the benchmark's are ``benchmark-<profile>``)."""
SHORTHANDS = ("method", "backbone", "epochs", "seed")
"""``TrainConfig`` fields that have their own option besides ``--set``."""
SHOWN_METRICS = (
    "auc",
    "gauc",
    "ndcg_at_20",
    "full_recall_at_20",
    "full_ndcg_at_20",
    # a run beyond the full-ranking budget reports a named user-sample estimate instead
    "sampled_users_recall_at_20",
    "sampled_users_ndcg_at_20",
    "sampled_users_count",
)


def _help_epilog() -> str:
    """``--help``'s tail: the docstring's examples, the methods and every ``--set`` key."""
    examples = __doc__.split("Examples::", 1)[1].split("``--workers 0``", 1)[0].strip("\n")
    width = max(len(name) for name in METHODS)
    methods = "\n".join(f"  {name:<{width}}  {METHOD_SPECS[name].summary}" for name in METHODS)
    defaults = TrainConfig().to_dict()
    keys = textwrap.fill(
        ", ".join(f"{key}={value}" for key, value in defaults.items()),
        width=98,
        initial_indent="  ",
        subsequent_indent="  ",
        break_on_hyphens=False,
    )
    return (
        f"examples:\n{examples.rstrip()}\n\n"
        "methods (--method; '+' = None's BCE on labeled rows, plus ...):\n"
        f"{methods}\n\n"
        "--set keys with their defaults (each documented in invlearn_ray/training/config.py):\n"
        f"{keys}"
    )


def make_parser() -> ArgumentParser:
    defaults = TrainConfig()
    parser = ArgumentParser(
        description="Train one method/backbone on a built dataset (one process or Ray Train), log\n"
        "it to MLflow, and print where its model, metrics and MLflow run are.",
        epilog=_help_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--dataset",
        help="a dataset written by build_data.py (or by full_benchmark.py: "
        "<out>/datasets/<name>): a folder or a URI (s3://…)",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        metavar="METHOD",
        help=f"the training method, listed below (default: {defaults.method})",
    )
    parser.add_argument(
        "--backbone",
        choices=sorted(BACKBONES),
        help=f"the model (default: {defaults.backbone})",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help=f"maximum epochs; early stopping may end sooner (default: {defaults.epochs})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help=f"seeds initialisation, shuffling and sampling (default: {defaults.seed})",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any TrainConfig option, e.g. --set lr=1e-3 --set step_rule=adam (repeatable; "
        "the keys are listed below)",
    )
    parser.add_argument(
        "--workers",
        type=nonnegative_int,
        default=0,
        help="Ray Train workers; 0 (default) = one process, no Ray",
    )
    parser.add_argument("--gpu", action="store_true", help="train on CUDA (one GPU per worker)")
    parser.add_argument(
        "--cpus-per-worker",
        type=float,
        default=0.5,
        help="CPUs reserved per Ray Train worker (default: %(default)s)",
    )
    parser.add_argument(
        "--max-failures",
        type=nonnegative_int,
        default=1,
        help="worker-group restarts from the last checkpoint (default: %(default)s)",
    )
    parser.add_argument(
        "--out", help="run folder or URI (s3://…) (default: runs/<dataset>-<method>-…)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a finished run already in --out"
    )
    parser.add_argument(
        "--storage-path", help="Ray Train checkpoints (default <out>/ray; <out>.ray for a URI)"
    )
    parser.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help="MLflow experiment (default: %(default)s); the store is <out>/../mlflow.db unless "
        "MLFLOW_TRACKING_URI names another",
    )
    add_ray_options(parser)
    parser.add_argument(
        "--smoke-test",
        action="store_true",
        help="tiny run: 2 epochs, small batches; without --dataset, a tiny synthetic dataset",
    )
    return parser


def train_config_from_args(args: argparse.Namespace, parser: ArgumentParser) -> TrainConfig:
    """The resolved :class:`TrainConfig`: smoke-test defaults, then options (errors exit 2)."""
    values: dict[str, Any] = dict(SMOKE_TEST) if args.smoke_test else {}
    given: set[str] = set()
    for name in SHORTHANDS:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
            given.add(name)
    try:
        settings = [parse_overrides([text]) for text in args.settings]
    except ValueError as error:
        parser.error(str(error))
    for setting in settings:
        (name,) = setting
        if name in given:
            parser.error(f"{name} is given twice (--{name} or --set {name}=…); give it once")
        given.add(name)
        values.update(setting)
    try:
        config = TrainConfig.from_dict(values)
    except ValueError as error:
        parser.error(str(error))
    # An option the method would ignore is an error, not a warning: the run would silently
    # train something other than what was asked for.
    for name in unread_settings(
        config.method,
        {key: values[key] for key in given}
        | {"ig_base": config.ig_base, "bias_init": config.bias_init},
    ):
        if name in given:
            parser.error(
                f"--set {name}={values[name]}: method {config.method!r} does not read {name} "
                f"(read by: {', '.join(readers_of(name))}); drop it or choose one of those methods"
            )
    return config


def _default_out(dataset: str | None, config: TrainConfig) -> str:
    name = "smoke" if dataset is None else storage.name(storage.absolute(dataset))
    return str(DEFAULT_RUNS_ROOT / f"{name}-{config.method}-{config.backbone}-seed{config.seed}")


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """Parse the command line (errors exit with status 2)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.dataset is None and not args.smoke_test:
        parser.error("--dataset is required (a folder written by build_data.py), or --smoke-test")
    if args.workers == 0 and (
        args.address or args.num_cpus or args.object_store_gb or args.storage_path
    ):
        parser.error(
            "--address, --num-cpus, --object-store-gb and --storage-path apply to --workers >= 1"
        )
    if args.cpus_per_worker <= 0:
        parser.error(f"--cpus-per-worker must be > 0, got {args.cpus_per_worker}")
    config = train_config_from_args(args, parser)
    if args.out is None:
        args.out = _default_out(args.dataset, config)
    if (
        args.storage_path
        and storage.is_local(args.storage_path)
        and storage.is_local(args.out)
        and Path(storage.absolute(args.storage_path)).is_relative_to(storage.absolute(args.out))
    ):
        parser.error(
            "--storage-path must lie outside --out (the run folder is replaced as a whole when "
            "it is published); leave it unset to keep checkpoints in <out>/ray"
        )
    return config, args


def _smoke_dataset(out: str) -> str:
    """Build the tiny synthetic dataset in memory (no Ray) into ``<out>/dataset``."""
    path = storage.join(out, "dataset")
    synthetic = SyntheticConfig.preset("tiny", seed=DATA_SEED)
    source = SourceSpec.from_synthetic(synthetic, name="smoke")
    build_dataset_in_memory(BuildConfig(source=source), path)
    return path


@command_line
def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    verbosity = configure_logging(args)
    out = storage.absolute(args.out)
    check_can_publish(out, args.overwrite)  # before the smoke-test dataset is built into <out>
    dataset = storage.absolute(args.dataset) if args.dataset else _smoke_dataset(out)
    # Everything run_training checks, before Ray starts.
    check_run(dataset, config, args.workers, out, args.overwrite, args.storage_path)
    resolved = {
        "dataset": str(dataset),
        "workers": args.workers,
        "gpu": args.gpu,
        "out": str(out),
        "overwrite": args.overwrite,
        "train": config.to_dict(),
    }
    if args.workers:
        resolved.update(cpus_per_worker=args.cpus_per_worker, max_failures=args.max_failures)
    print("resolved config:\n" + json.dumps(resolved, indent=2), flush=True)
    if args.workers:
        # Imported only here: one-process training must run where Ray is not installed.
        from invlearn_ray.distributed.session import ensure_ray

        ensure_ray(args.address, args.num_cpus, verbosity, args.object_store_gb)
    summary = run_training(
        dataset,
        config,
        num_workers=args.workers,
        output_dir=out,
        use_gpu=args.gpu,
        cpus_per_worker=args.cpus_per_worker,
        max_failures=args.max_failures,
        storage_path=args.storage_path,
        overwrite=args.overwrite,
    )
    tracker, run_id = track_run(dataset, config, out, summary, args.experiment)
    shown = {key: summary["test"][key] for key in SHOWN_METRICS if key in summary["test"]}
    print(
        f"selected epoch {summary['best_epoch']} of {summary['epochs_run']}; test: "
        + ", ".join(f"{key} {value:.4f}" for key, value in shown.items())
    )
    print(f"model:         {storage.join(out, MODEL_DIR)}")
    print(f"metrics:       {storage.join(out, METRICS_FILE)}")
    print(f"direction log: {storage.join(out, DIRECTION_LOG_FILE)}")
    print(f"MLflow:        {tracker.describe_run(run_id)}")
    return 0


def track_run(
    dataset: str, config: TrainConfig, out: str, summary: dict[str, Any], experiment: str
) -> tuple[Tracker, str]:
    """Log the published run to MLflow as the benchmark logs each of its runs; the default
    store is the SQLite file beside a local run folder (``<out>/../mlflow.db``), ``runs/``
    for a run in an object store."""
    # Imported here: it pulls in the benchmark's run records, which only this step needs.
    from invlearn_ray.experiments.runs import STATUS_OK, RunOutcome, RunSpec, track_outcome

    store = Path(out).parent if storage.is_local(out) else DEFAULT_RUNS_ROOT
    tracker = Tracker(experiment, store)
    spec = RunSpec(
        key=storage.name(out),
        dataset=dataset,
        dataset_name=storage.name(dataset),
        config=config,
        output_dir=out,
    )
    outcome = RunOutcome(
        spec=spec,
        status=STATUS_OK,
        valid=summary["valid"],
        test=summary["test"],
        best_epoch=int(summary["best_epoch"]),
        epochs_run=int(summary["epochs_run"]),
        history=read_metrics(out)["history"],
    )
    return tracker, track_outcome(tracker, outcome, role="train")


if __name__ == "__main__":
    sys.exit(main())
