"""Top-K unseen items per user from a trained model, as Parquet, with Ray Data batch inference.

Examples::

    python pipelines/recommend.py --model runs/ml100k-ig-gmf-seed0 --k 20
    python pipelines/recommend.py --model runs/x/model --users 1 7 42 --out recs/x
    python pipelines/recommend.py --model runs/x --users-file users.txt --actors 2 --overwrite
    python pipelines/recommend.py --model runs/x --smoke-test      # 10 users, k = 5
    python pipelines/recommend.py --model s3://bucket/runs/x --out s3://bucket/recs/x

``--model`` is a model folder written by ``pipelines/train.py`` (``<run>/model``) or its run
folder; ``--model`` and ``--out`` are local paths or URIs (``s3://``, ``gs://``, ``file://``),
and on a Ray cluster of several nodes they must be URIs: the scoring actors read the model and
write the output on whichever node they run. The default ``--out`` is ``<run>/recommendations``
for a local run, ``<run>.recommendations`` beside one in an object store (whose commit lists
the run's own files only); the output is committed last (``_COMMIT.json``).

Users and items are *raw* ids (the model folder carries the dataset's id map); items a user
interacted with in training are never recommended. Output columns: ``user``, ``rank`` (1 =
best), ``item``, ``score`` (the model's logit). All the logic lives in
``invlearn_ray.distributed.recommend``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from invlearn_ray import storage
from invlearn_ray.cli import (
    ArgumentParser,
    add_ray_options,
    command_line,
    configure_logging,
    positive_int,
)
from invlearn_ray.distributed.recommend import check_request, read_raw_ids, recommend_to_parquet
from invlearn_ray.distributed.session import check_reachable_from_workers, ensure_ray
from invlearn_ray.models.checkpoint import MODEL_CONFIG
from invlearn_ray.training.run_folder import MODEL_DIR

SMOKE_TEST_USERS = 10
SMOKE_TEST_K = 5


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(
        description="Top-K unseen items per user from a trained model, written as Parquet.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--model", required=True, help="model folder or its run folder (a path or a URI)"
    )
    parser.add_argument("--k", type=positive_int, help="items per user (default 20)")
    users = parser.add_mutually_exclusive_group()
    users.add_argument("--users", nargs="+", metavar="ID", help="raw user ids (default: all)")
    users.add_argument("--users-file", type=Path, help="a file of raw user ids, one per line")
    parser.add_argument(
        "--out", help="Parquet folder, a path or a URI (default: <run>/recommendations)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output")
    parser.add_argument(
        "--batch-size", type=positive_int, default=256, help="users per inference batch"
    )
    parser.add_argument("--actors", type=positive_int, default=1, help="scoring actors")
    parser.add_argument("--gpu", action="store_true", help="one GPU per scoring actor")
    add_ray_options(parser)
    parser.add_argument(
        "--smoke-test",
        action="store_true",
        help=f"the first {SMOKE_TEST_USERS} users, k = {SMOKE_TEST_K}",
    )
    return parser


def _model_dir(location: str, parser: ArgumentParser) -> str:
    """Accept a model folder or a run folder holding ``model/`` (absolute: actors run
    elsewhere)."""
    location = storage.absolute(location)
    try:
        for candidate in (location, storage.join(location, MODEL_DIR)):
            if storage.is_file(storage.join(candidate, MODEL_CONFIG)):
                return candidate
    except storage.StorageError as error:
        parser.error(f"--model {error}")
    parser.error(
        f"--model {location}: neither it nor {storage.join(location, MODEL_DIR)} holds "
        f"{MODEL_CONFIG}; point it at a run folder of pipelines/train.py or its model/ folder"
    )


def default_out(model_dir: str) -> str:
    """``<run>/recommendations`` for a local run; beside an object-store run, whose commit
    lists its own files only (an extra file inside would break it)."""
    run_dir = storage.parent(model_dir) if storage.name(model_dir) == MODEL_DIR else model_dir
    if storage.is_local(run_dir):
        return storage.join(run_dir, "recommendations")
    return f"{run_dir.rstrip('/')}.recommendations"


def _read_users_file(path: Path, parser: ArgumentParser) -> list[str]:
    if not path.is_file():
        parser.error(f"--users-file {path}: no such file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        parser.error(f"--users-file {path}: not a text file (one raw user id per line expected)")
    users = [line.strip() for line in text.splitlines() if line.strip()]
    if not users:
        parser.error(f"--users-file {path}: holds no user ids (one per line expected)")
    return users


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and resolve the command line (errors exit with status 2)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    args.model = _model_dir(args.model, parser)
    if args.users_file is not None:
        args.users = _read_users_file(args.users_file, parser)
    if args.smoke_test:
        args.k = args.k or SMOKE_TEST_K
    args.k = args.k or 20
    args.out = storage.absolute(args.out) if args.out else default_out(args.model)
    return args


@command_line
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    verbosity = configure_logging(args)
    users = args.users
    if args.smoke_test and users is None:
        users = read_raw_ids(args.model, "users")[:SMOKE_TEST_USERS].tolist()
    resolved = {
        "model": args.model,
        "k": args.k,
        "users": "all" if users is None else len(users),
        "out": args.out,
        "overwrite": args.overwrite,
        "batch_size": args.batch_size,
        "actors": args.actors,
        "gpu": args.gpu,
        "address": args.address,
    }
    print("resolved config:\n" + json.dumps(resolved, indent=2), flush=True)
    # Before starting Ray: a damaged model, a typo in an id or an output that must not be
    # replaced should cost nothing and change nothing.
    check_request(args.model, args.out, users, args.overwrite)

    ensure_ray(args.address, args.num_cpus, verbosity, args.object_store_gb)
    # Scoring actors read the model and write the output on whichever node they run.
    for location, option in ((args.model, "--model"), (args.out, "--out")):
        check_reachable_from_workers(location, option)
    n_rows = recommend_to_parquet(
        args.model,
        args.out,
        k=args.k,
        users=users,
        batch_size=args.batch_size,
        num_actors=args.actors,
        use_gpu=args.gpu,
        overwrite=args.overwrite,
    )
    print(f"{n_rows} recommendations (user, rank, item, score) written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
