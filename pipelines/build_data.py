"""Build a dataset folder (Parquet shards + manifest) from a source, with Ray Data.

Examples::

    python pipelines/build_data.py                      # synthetic default -> datasets/synthetic
    python pipelines/build_data.py --smoke-test         # tiny synthetic -> datasets/smoke
    python pipelines/build_data.py --preset micro_video # the paper's Micro Video size (9.5 M)
    python pipelines/build_data.py --preset micro_video --rows 1000000 --name micro_1m
    python pipelines/build_data.py --source ml100k-inter ../shared/data/ml-100k/ml-100k.inter
    python pipelines/build_data.py --source presplit ../shared/data/ml-100k/split --name ml100k
    python pipelines/build_data.py --source csv events.csv \\
        --columns user=uid,item=vid,play_time=watched,duration=length --rule finish-rate
    python pipelines/build_data.py --engine memory ...  # no Ray (same rows)
    python pipelines/build_data.py --out s3://bucket/datasets/synthetic   # an object store

Ray: a local Ray is started (``--num-cpus``) unless ``--address`` (or ``RAY_ADDRESS``) names a
cluster; on a cluster of several nodes ``--out`` must be a URI every node reaches (S3 settings:
the AWS variables, see ``invlearn_ray.storage``). All the logic lives in ``invlearn_ray.data``
and ``invlearn_ray.distributed.build``.
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
    nonnegative_int,
    plain_name,
    positive_int,
)
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.labels import RULES, make_rule
from invlearn_ray.data.manifest import Manifest
from invlearn_ray.data.readers import MAPPABLE_COLUMNS
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import COLD_POLICIES, DATA_SEED, SplitOptions
from invlearn_ray.data.synthetic import FEEDBACKS, PRESETS, SyntheticConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT_ROOT = REPO_ROOT / "datasets"

CLI_SOURCES = {
    # CLI name: (source kind, default dataset name or None to take it from the file)
    "synthetic": ("synthetic", "synthetic"),
    "ml100k-inter": ("inter", "ml100k"),
    "inter": ("inter", None),
    "ml100k": ("ml100k", "ml100k"),
    "ml1m": ("ml1m", "ml1m"),
    "presplit": ("presplit", None),
    "csv": ("csv", None),
    "parquet": ("parquet", None),
}

RULE_OPTIONS = {
    "pos_threshold": "rating",
    "neg_threshold": "rating",
    "finish_pos": "finish-rate",
    "finish_neg": "finish-rate",
    "lower_quantile": "playtime-quartile",
    "upper_quantile": "playtime-quartile",
}
"""Rule-parameter options and the rule each belongs to."""

RULE_PARAMETERS = {
    "pos_threshold": "pos_threshold",
    "neg_threshold": "neg_threshold",
    "finish_pos": "pos_above",
    "finish_neg": "neg_below",
    "lower_quantile": "lower_quantile",
    "upper_quantile": "upper_quantile",
}


def _column_mapping(text: str) -> dict[str, str]:
    mapping = {}
    for part in text.split(","):
        canonical, equals, source = (piece.strip() for piece in part.partition("="))
        if not equals or not canonical or not source:
            raise argparse.ArgumentTypeError(
                f"--columns takes NAME=SOURCE pairs separated by commas, got {part!r}"
            )
        if canonical not in MAPPABLE_COLUMNS:
            raise argparse.ArgumentTypeError(
                f"--columns: unknown column {canonical!r}; valid: {', '.join(MAPPABLE_COLUMNS)}"
            )
        if canonical in mapping:
            raise argparse.ArgumentTypeError(f"--columns names {canonical!r} twice")
        mapping[canonical] = source
    return mapping


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fractions takes three numbers, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"--fractions takes three numbers, got {text!r}")
    return values


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(
        description="Build a dataset folder (Parquet shards + manifest.json) with Ray Data.",
        allow_abbrev=False,
    )
    source = parser.add_argument_group("source")
    source.add_argument(
        "--source",
        nargs="+",
        metavar=("KIND", "PATH"),
        help=f"KIND [PATH ...]; KIND one of {', '.join(CLI_SOURCES)} (default: synthetic)",
    )
    source.add_argument(
        "--name",
        type=plain_name,
        help="dataset name: the folder under datasets/ (required for presplit: file prefix)",
    )
    source.add_argument(
        "--columns", type=_column_mapping, help="inter/csv/parquet: user=COL,item=COL,rating=COL"
    )
    source.add_argument("--delimiter", default=",", help="csv field separator (default ,)")
    source.add_argument(
        "--synthetic-preset",
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        metavar="NAME",
        help=f"synthetic shape — ids, truth, feedback, size — one of {', '.join(sorted(PRESETS))} "
        "(micro_video: the paper's Micro Video, 37,692 users x 131,690 items, 9.5 M clear rows; "
        "ml20m_scale: MovieLens-20M's ids and 20 M rows); default: default",
    )
    source.add_argument(
        "--rows",
        type=positive_int,
        help="synthetic: expected clear (labeled) rows; keeps the preset's ids and scales its "
        "density (unclear rows come on top, 1 - clear_rate of all rows)",
    )
    source.add_argument("--feedback", choices=FEEDBACKS, help="synthetic feedback kind")
    source.add_argument("--smoke-test", action="store_true", help="tiny synthetic dataset")

    rule = parser.add_argument_group("labeling rule")
    rule.add_argument("--rule", choices=sorted(RULES), help="default: the source's usual rule")
    rule.add_argument("--pos-threshold", type=float, help="rating: rating >= this -> 1")
    rule.add_argument("--neg-threshold", type=float, help="rating: rating <= this -> 0")
    rule.add_argument("--finish-pos", type=float, help="finish-rate: rate > this -> 1")
    rule.add_argument("--finish-neg", type=float, help="finish-rate: rate < this -> 0")
    rule.add_argument("--lower-quantile", type=float, help="playtime-quartile: below -> 0")
    rule.add_argument("--upper-quantile", type=float, help="playtime-quartile: above -> 1")

    split = parser.add_argument_group("splits and sampling")
    split.add_argument(
        "--seed",
        type=int,
        default=DATA_SEED,
        help="seeds the synthetic generator, splits and sampling (default: %(default)s, the seed "
        "full_benchmark.py builds with)",
    )
    split.add_argument(
        "--fractions",
        type=_fractions,
        default=(0.6, 0.2, 0.2),
        help="train,valid,test fractions (default 0.6,0.2,0.2)",
    )
    split.add_argument(
        "--train-test-fraction",
        type=float,
        default=0.1,
        help="share of labeled training rows used as IG's training-test",
    )
    split.add_argument(
        "--label-fraction",
        type=float,
        default=1.0,
        help="keep this share of labeled training rows labeled; the rest become "
        "observed-unlabeled rows with hidden true labels (default: 1)",
    )
    split.add_argument("--cold-policy", choices=COLD_POLICIES, default="keep")
    split.add_argument(
        "--sampling-rate",
        type=nonnegative_int,
        default=1,
        help="unlabeled items per labeled training row in unlabeled/",
    )

    output = parser.add_argument_group("output and execution")
    output.add_argument(
        "--out",
        help="dataset folder: a local path or a URI such as s3://bucket/path "
        "(default: datasets/<name>)",
    )
    output.add_argument(
        "--overwrite", action="store_true", help="replace a different dataset already in --out"
    )
    output.add_argument("--shards", type=positive_int, default=1, help="Parquet files per split")
    output.add_argument(
        "--engine",
        choices=("ray", "memory"),
        default="ray",
        help="ray (default) or memory (no Ray; same rows)",
    )
    add_ray_options(output)
    return parser


def _source_spec(args: argparse.Namespace, parser: ArgumentParser) -> SourceSpec:
    if args.smoke_test:
        if args.source or args.rows:
            parser.error("--smoke-test builds the tiny synthetic dataset; drop --source/--rows")
        return SourceSpec.from_synthetic(
            SyntheticConfig.preset("tiny", seed=args.seed), name=args.name or "smoke"
        )
    kind_name, *paths = args.source or ["synthetic"]
    if kind_name not in CLI_SOURCES:
        parser.error(f"--source: unknown kind {kind_name!r}; valid: {', '.join(CLI_SOURCES)}")
    kind, default_name = CLI_SOURCES[kind_name]
    if kind != "synthetic" and (args.synthetic_preset != "default" or args.feedback or args.rows):
        parser.error("--preset, --rows and --feedback apply to --source synthetic only")
    if args.columns and kind not in ("inter", "csv", "parquet"):
        parser.error(f"--columns applies to inter, csv and parquet sources, not {kind_name!r}")
    if kind == "synthetic":
        if paths:
            parser.error("--source synthetic takes no path")
        overrides = {"seed": args.seed}
        if args.feedback:
            overrides["feedback"] = args.feedback
        config = SyntheticConfig.preset(args.synthetic_preset, **overrides)
        if args.rows:
            try:
                config = config.with_clear_rows(args.rows)
            except ValueError as error:
                parser.error(f"--rows: {error}")
        return SourceSpec.from_synthetic(config, name=args.name or default_name)
    if not paths:
        parser.error(f"--source {kind_name} needs a path")
    if kind == "presplit":
        if len(paths) != 1 or not args.name:
            parser.error("--source presplit DIR needs exactly one folder and --name (file prefix)")
        return SourceSpec.presplit(paths[0], args.name)
    if kind not in ("csv", "parquet", "inter") and len(paths) != 1:
        parser.error(f"--source {kind_name} takes one file")
    return SourceSpec.from_files(
        kind,
        *paths,
        columns=args.columns,
        delimiter=args.delimiter,
        name=args.name or default_name,
    )


def _rule(args: argparse.Namespace, parser: ArgumentParser):
    given = {
        option: getattr(args, option)
        for option in RULE_OPTIONS
        if getattr(args, option) is not None
    }
    if not args.rule:
        if given:
            parser.error(
                f"--{next(iter(given)).replace('_', '-')} needs --rule "
                f"{RULE_OPTIONS[next(iter(given))]}"
            )
        return None
    for option in given:
        if RULE_OPTIONS[option] != args.rule:
            parser.error(
                f"--{option.replace('_', '-')} applies to --rule {RULE_OPTIONS[option]}, "
                f"not {args.rule}"
            )
    try:
        return make_rule(args.rule, **{RULE_PARAMETERS[o]: v for o, v in given.items()})
    except ValueError as error:
        parser.error(str(error))


def config_from_args(argv: list[str] | None = None) -> tuple[BuildConfig, argparse.Namespace]:
    """Parse the command line into a :class:`BuildConfig`.

    Malformed options exit with status 2; a source path that does not exist raises
    ``DataError`` (status 1 from :func:`main`).
    """
    parser = make_parser()
    args = parser.parse_args(argv)
    source = _source_spec(args, parser)
    rule = _rule(args, parser)
    try:
        split = SplitOptions(
            seed=args.seed,
            fractions=args.fractions,
            train_test_fraction=args.train_test_fraction,
            label_fraction=args.label_fraction,
            cold_policy=args.cold_policy,
        )
    except ValueError as error:
        parser.error(str(error))
    config = BuildConfig(
        source=source,
        rule=rule,
        split=split,
        sampling_rate=args.sampling_rate,
        shards=args.shards,
        name=args.name,
    )
    if args.engine == "memory" and (args.address or args.num_cpus or args.object_store_gb):
        parser.error("--address, --num-cpus and --object-store-gb apply to --engine ray")
    if args.out is None:
        out = DEFAULT_OUT_ROOT / config.dataset_name
        if out.resolve().parent != DEFAULT_OUT_ROOT.resolve():
            parser.error(
                f"the dataset name {config.dataset_name!r} is not a plain folder name; "
                "give --name or --out"
            )
        args.out = str(out)
    args.out = storage.absolute(args.out)
    return config, args


def _print_counts(manifest: Manifest) -> None:
    print(f"{'split':<12}{'rows':>10}{'label 0':>10}{'label 1':>10}")
    for name, counts in manifest.counts.items():
        print(
            f"{name:<12}{counts['rows']:>10}{counts.get('label_0', ''):>10}"
            f"{counts.get('label_1', ''):>10}"
        )
    conservation = manifest.conservation
    print(
        f"input rows {conservation['input_rows']} = written "
        f"{sum(conservation['written_rows'].values())} + duplicates "
        f"{conservation['duplicates_dropped']} + unclear evaluation rows dropped "
        f"{conservation['unclear_evaluation_rows_dropped']} + cold rows dropped "
        f"{conservation['cold_rows_dropped']}: {'holds' if conservation['holds'] else 'BROKEN'}"
    )


@command_line
def main(argv: list[str] | None = None) -> int:
    config, args = config_from_args(argv)
    verbosity = configure_logging(args)
    resolved = {
        **config.inputs(),
        "out": str(args.out),
        "engine": args.engine,
        "overwrite": args.overwrite,
        "address": args.address,
    }
    print("resolved config:\n" + json.dumps(resolved, indent=2))
    if args.engine == "memory":
        manifest = build_dataset_in_memory(config, args.out, overwrite=args.overwrite)
    else:
        # Imported only here: --engine memory must run where Ray is not installed.
        from invlearn_ray.distributed.build import build_dataset
        from invlearn_ray.distributed.session import ensure_ray

        dd.check_output_dir(args.out, config.inputs(), args.overwrite)
        ensure_ray(args.address, args.num_cpus, verbosity, args.object_store_gb)
        manifest = build_dataset(config, args.out, overwrite=args.overwrite)
    print(
        f"dataset {manifest.name!r} written to {args.out} "
        f"({manifest.n_users} users, {manifest.n_items} items, "
        f"{manifest.input_rows} input rows, rule {manifest.rule})"
    )
    _print_counts(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
