"""Build a dataset from a source: the pure steps, and the Ray-free in-memory builder.

The build is split into *planning* and *applying* so that one set of functions serves both
engines:

1. parse (per file) and index: :func:`index_and_map` gives each row its global ``row`` id and
   contiguous ``user``/``item`` indices (per row);
2. :func:`plan_build` looks at the *key columns* of every row — ids, feedback, given split — and
   decides everything global: which duplicates to drop, the fitted labeling rule, the split
   cuts, which users and items occur in training (cold rows);
3. :func:`apply_build_plan` applies that plan to any batch of rows (per row);
4. :func:`split_rows` shapes each output folder's rows; :func:`draw_unlabeled` makes the epoch-0
   unlabeled draw; :func:`make_manifest` records counts and proves conservation.

The in-memory builder runs 1–4 on whole tables; ``invlearn_ray.distributed.build`` runs steps
1, 3 and 4 as Ray Data ``map_batches`` over blocks and step 2 on the driver, so both produce the
same rows (a Ray test checks it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from invlearn_ray import storage
from invlearn_ray.data import canonical as cn
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data import publishing
from invlearn_ray.data import splits as sp
from invlearn_ray.data.dedup import drop_rows, duplicate_rows
from invlearn_ray.data.labels import (
    LabelRule,
    apply_labels,
    check_rule_fits,
    check_some_labeled,
    default_rule,
    rule_to_dict,
)
from invlearn_ray.data.loading import recdata_from_tables
from invlearn_ray.data.manifest import SCHEMA_VERSION, Manifest
from invlearn_ray.data.recdata import UNKNOWN_LABEL, RecData, UserItemIndex
from invlearn_ray.data.sampling import epoch_generator, sample_unlabeled
from invlearn_ray.data.sources import ParsedSource, SourceSpec, read_source
from invlearn_ray.data.synthetic import PlantedTruth, SyntheticConfig

logger = logging.getLogger(__name__)

_SPLIT_CODES = {
    "train_train": (sp.TRAIN_TRAIN,),
    "train_test": (sp.TRAIN_TEST,),
    "valid": (sp.VALID,),
    "test": (sp.TEST,),
    "unclear": (sp.UNCLEAR_ROWS, sp.HIDDEN),
}


@dataclass(frozen=True)
class BuildConfig:
    """Everything that defines a built dataset.

    Attributes:
        source: where the rows come from.
        rule: labeling rule; None takes the source's default (MovieLens-style ratings:
            ``>= 3 → 1, <= 2 → 0``; micro-video: finish rate 0.8 / 0.2; synthetic: the rule its
            generator's feedback was made for).
        split: split, label-density and cold-row options (its seed seeds the whole build).
        sampling_rate: unlabeled items drawn per labeled training row for ``unlabeled/``.
        shards: Parquet files per split folder (fewer for splits with fewer rows).
        name: dataset name; defaults to the source's.
    """

    source: SourceSpec
    rule: LabelRule | None = None
    split: sp.SplitOptions = field(default_factory=sp.SplitOptions)
    sampling_rate: int = 1
    shards: int = 1
    name: str | None = None

    def __post_init__(self) -> None:
        if self.sampling_rate < 0:
            raise ValueError(f"sampling_rate must be 0 or more: {self.sampling_rate}")
        if self.shards < 1:
            raise ValueError(f"shards must be at least 1: {self.shards}")

    @property
    def dataset_name(self) -> str:
        return self.name or self.source.name or self.source.kind

    def resolve_rule(self, columns: list[str]) -> LabelRule:
        """The rule to use for a source with these canonical columns (checked to fit)."""
        if self.rule is not None:
            rule = self.rule
        elif self.source.synthetic is not None:
            rule = self.source.synthetic.default_rule()
        else:
            rule = default_rule(cn.feedback_kind(columns))
        check_rule_fits(rule, columns)
        return rule

    def inputs(self) -> dict[str, Any]:
        """JSON form of the inputs; equal inputs mean the same dataset (rebuild policy)."""
        return {
            "name": self.dataset_name,
            "source": self.source.to_dict(),
            "source_files": self.source.fingerprints(),
            "rule": None if self.rule is None else rule_to_dict(self.rule),
            "split": _split_dict(self.split),
            "sampling_rate": self.sampling_rate,
            "shards": self.shards,
        }


def _split_dict(options: sp.SplitOptions) -> dict[str, Any]:
    return {
        "seed": options.seed,
        "fractions": list(options.fractions),
        "train_test_fraction": options.train_test_fraction,
        "label_fraction": options.label_fraction,
        "cold_policy": options.cold_policy,
    }


def id_maps_for(parsed_users: pa.Array, parsed_items: pa.Array, universe=None):
    """The user and item id maps: from every raw id seen, or a synthetic source's universe."""
    if universe is not None:
        return cn.build_id_map(universe[0]), cn.build_id_map(universe[1])
    return cn.build_id_map(parsed_users), cn.build_id_map(parsed_items)


def index_and_map(
    table: pa.Table, offsets: np.ndarray, user_map: pa.Array, item_map: pa.Array
) -> pa.Table:
    """Per-row step 1: global ``row`` ids and contiguous ``user``/``item`` indices."""
    return cn.apply_id_maps(cn.add_row_index(table, offsets), user_map, item_map)


def planning_columns(columns: list[str]) -> list[str]:
    """The columns :func:`plan_build` needs: keys, feedback, given split, hidden truth."""
    wanted = {
        cn.ROW,
        cn.USER,
        cn.ITEM,
        cn.GIVEN_SPLIT,
        cn.TRUE_LABEL,
        cn.RATING,
        cn.LABEL,
        cn.PLAY_TIME,
        cn.DURATION,
    }
    return [name for name in columns if name in wanted]


@dataclass(frozen=True)
class BuildPlan:
    """The global decisions of a build, applied per row by :func:`apply_build_plan`."""

    dropped_rows: np.ndarray
    rule: LabelRule
    split: sp.SplitPlan
    user_seen: np.ndarray
    item_seen: np.ndarray
    cold_policy: str


@dataclass(frozen=True)
class PlanFacts:
    """What planning learned, for the manifest."""

    duplicates_dropped: int
    cold: dict[str, dict[str, int]]
    codes: dict[str, int]


def apply_build_plan(table: pa.Table, plan: BuildPlan) -> pa.Table:
    """Per-row step 3: drop duplicates, label, assign splits, flag (or drop) cold rows."""
    table = drop_rows(table, plan.dropped_rows)
    table = apply_labels(table, plan.rule)
    table = sp.assign_split_column(table, plan.split)
    return sp.flag_cold_column(table, plan.user_seen, plan.item_seen, plan.cold_policy)


def plan_build(
    keys: pa.Table, config: BuildConfig, n_users: int, n_items: int
) -> tuple[BuildPlan, PlanFacts, pa.Table]:
    """Step 2: decide the build from the key columns of every row.

    Args:
        keys: indexed rows with at least :func:`planning_columns` (may be the full table).
        config: build options.
        n_users, n_items: sizes of the id maps.

    Returns:
        The plan, facts for the manifest, and ``keys`` with the plan applied (labels, split
        codes and cold flags of every kept row — what the unlabeled draw is made from).

    Raises:
        NoLabeledRowsError: the labeling rule leaves every row unclear.
        EmptySplitError: a labeled split would be empty (before or after dropping cold rows).
        SingleClassSplitError: validation or test would hold one label class (a training
            split holding one is logged as a warning).
        DataError: the labeling rule does not fit the source's feedback.
    """
    rule = config.resolve_rule(keys.column_names)
    dropped = duplicate_rows(
        keys.column(cn.ROW).to_numpy(),
        keys.column(cn.USER).to_numpy(),
        keys.column(cn.ITEM).to_numpy(),
    )
    kept = drop_rows(keys, dropped)
    rule = rule.fit(kept)
    labeled = apply_labels(kept, rule)
    check_some_labeled(labeled.column(cn.LABEL).to_numpy(), rule)
    split_plan = sp.plan_table_splits(labeled, config.split)
    assigned = sp.assign_split_column(labeled, split_plan)
    users = assigned.column(cn.USER).to_numpy()
    items = assigned.column(cn.ITEM).to_numpy()
    codes = assigned.column(sp.SPLIT).to_numpy()
    user_seen, item_seen = sp.training_presence(users, items, codes, n_users, n_items)
    plan = BuildPlan(dropped, rule, split_plan, user_seen, item_seen, config.split.cold_policy)
    planned = sp.flag_cold_column(assigned, user_seen, item_seen, plan.cold_policy)
    final_codes = planned.column(sp.SPLIT).to_numpy()
    sp.check_evaluation_not_empty(final_codes)
    for warning in sp.check_label_classes(final_codes, planned.column(cn.LABEL).to_numpy()):
        logger.warning("dataset %r: %s", config.dataset_name, warning)
    cold = planned.column(sp.COLD).to_numpy(zero_copy_only=False)
    facts = PlanFacts(
        duplicates_dropped=len(dropped),
        cold=sp.cold_summary(users, items, final_codes, cold, user_seen, item_seen),
        codes={name: int((final_codes == code).sum()) for code, name in sp.SPLIT_NAMES.items()},
    )
    return plan, facts, planned


def feedback_columns(columns: list[str]) -> list[str]:
    """Source value columns written to the outputs (the label column is written as such)."""
    return [name for name in cn.value_columns_of(columns) if name != cn.LABEL]


def output_schema(name: str, columns: list[str]) -> pa.Schema:
    """Schema of an output folder for a source whose canonical columns are ``columns``."""
    values = [pa.field(c, pa.float64()) for c in feedback_columns(columns)]
    ids = [pa.field(cn.USER, pa.int64()), pa.field(cn.ITEM, pa.int64())]
    if name in dd.LABELED_SPLITS:
        cold = [pa.field(sp.COLD, pa.bool_())] if name in ("valid", "test") else []
        return pa.schema(
            [*ids, pa.field(cn.LABEL, pa.int8()), *values, pa.field(cn.ROW, pa.int64()), *cold]
        )
    if name == "unclear":
        return pa.schema(
            [
                *ids,
                pa.field(dd.HIDDEN_LABEL, pa.int8()),
                pa.field(dd.ORIGIN, pa.string()),
                *values,
                pa.field(cn.ROW, pa.int64()),
            ]
        )
    if name == "unlabeled":
        truth = [pa.field(dd.HIDDEN_LABEL, pa.int8())] if cn.TRUE_LABEL in columns else []
        return pa.schema([*ids, pa.field(dd.SOURCE_ROW, pa.int64()), *truth])
    raise ValueError(f"unknown output folder {name!r}; valid: {list(dd.ALL_SPLITS)}")


def split_rows(table: pa.Table, name: str, schema: pa.Schema) -> pa.Table:
    """Per-row step 4: the rows of output folder ``name``, shaped to ``schema``.

    ``unclear/`` holds both unclear rows (``origin`` "unclear"; hidden label = planted truth for
    synthetic data, else unknown) and rows hidden by the label-density option (``origin``
    "label_fraction"; hidden label = their label). The feedback values of hidden rows are
    blanked: a rating of 5 would give the hidden label away.
    """
    codes = table.column(sp.SPLIT).to_numpy()
    chosen = table.filter(pa.array(np.isin(codes, _SPLIT_CODES[name])))
    if name == "unclear":
        hidden = chosen.column(sp.SPLIT).to_numpy() == sp.HIDDEN
        if cn.TRUE_LABEL in chosen.column_names:
            unclear_truth = chosen.column(cn.TRUE_LABEL).to_numpy()
        else:
            unclear_truth = np.full(chosen.num_rows, UNKNOWN_LABEL, dtype=np.int8)
        hidden_label = np.where(hidden, chosen.column(cn.LABEL).to_numpy(), unclear_truth)
        columns = {
            cn.USER: chosen.column(cn.USER),
            cn.ITEM: chosen.column(cn.ITEM),
            dd.HIDDEN_LABEL: pa.array(hidden_label.astype(np.int8)),
            dd.ORIGIN: pa.array(
                np.where(hidden, dd.ORIGIN_LABEL_FRACTION, dd.ORIGIN_UNCLEAR).tolist(),
                type=pa.string(),
            ),
        }
        blank = pa.array(hidden)
        for value in feedback_columns(chosen.column_names):
            columns[value] = pc.if_else(blank, pa.scalar(None, pa.float64()), chosen.column(value))
        columns[cn.ROW] = chosen.column(cn.ROW)
        return pa.table(columns).cast(schema)
    return chosen.select(schema.names).cast(schema)


def draw_unlabeled(
    planned: pa.Table,
    n_users: int,
    n_items: int,
    rate: int,
    seed: int,
    truth: PlantedTruth | None,
) -> pa.Table:
    """The epoch-0 draw of sampled unlabeled items, as stored in ``unlabeled/``.

    One draw of ``rate`` items per labeled training row, rows taken in the order
    ``RecData.labeled_training()`` has after :func:`~invlearn_ray.data.loading.load_dataset`
    (training-train by ``row``, then training-test by ``row``), from
    ``sample_unlabeled(users, seen_in_training, rate, epoch_generator(seed, 0))`` — so a trainer
    that redraws epoch 0 gets exactly these rows.
    """
    codes = planned.column(sp.SPLIT).to_numpy()
    rows = planned.column(cn.ROW).to_numpy()
    users = planned.column(cn.USER).to_numpy()
    items = planned.column(cn.ITEM).to_numpy()
    training = np.isin(codes, sp.TRAINING_CODES)
    seen = UserItemIndex.from_pairs(
        torch.from_numpy(users[training]), torch.from_numpy(items[training]), n_users, n_items
    )
    order = np.concatenate(
        [
            np.flatnonzero(codes == sp.TRAIN_TRAIN)[np.argsort(rows[codes == sp.TRAIN_TRAIN])],
            np.flatnonzero(codes == sp.TRAIN_TEST)[np.argsort(rows[codes == sp.TRAIN_TEST])],
        ]
    )
    row_users = torch.from_numpy(users[order])
    drawn = sample_unlabeled(row_users, seen, rate, epoch_generator(seed, 0))
    columns = {
        cn.USER: pa.array(row_users.repeat_interleave(rate).numpy()),
        cn.ITEM: pa.array(drawn.flatten().numpy()),
        dd.SOURCE_ROW: pa.array(np.repeat(rows[order], rate)),
    }
    if truth is not None:
        columns[dd.HIDDEN_LABEL] = pa.array(
            truth.labels(row_users.repeat_interleave(rate), drawn.flatten()).numpy()
        )
    return pa.table(columns)


def summary_columns(name: str) -> list[str]:
    """Columns :func:`summarize_outputs` reads from each output folder."""
    if name in dd.LABELED_SPLITS:
        return [cn.LABEL, sp.COLD] if name in ("valid", "test") else [cn.LABEL]
    if name == "unclear":
        return [dd.HIDDEN_LABEL, dd.ORIGIN]
    return [dd.SOURCE_ROW]


def summarize_outputs(tables: dict[str, pa.Table]) -> dict[str, dict[str, int]]:
    """Counts per output folder and label — computed from what was (or will be) written."""
    counts: dict[str, dict[str, int]] = {}
    for name, table in tables.items():
        entry = {"rows": table.num_rows}
        if name in dd.LABELED_SPLITS:
            labels = table.column(cn.LABEL).to_numpy()
            entry.update(label_0=int((labels == 0).sum()), label_1=int((labels == 1).sum()))
            if sp.COLD in table.column_names:
                entry["cold"] = int(table.column(sp.COLD).to_numpy(zero_copy_only=False).sum())
        elif name == "unclear":
            hidden = table.column(dd.HIDDEN_LABEL).to_numpy()
            origin = np.asarray(table.column(dd.ORIGIN).to_pylist(), dtype=object)
            entry.update(
                origin_unclear=int((origin == dd.ORIGIN_UNCLEAR).sum()),
                origin_label_fraction=int((origin == dd.ORIGIN_LABEL_FRACTION).sum()),
                hidden_label_0=int((hidden == 0).sum()),
                hidden_label_1=int((hidden == 1).sum()),
                hidden_label_unknown=int((hidden == UNKNOWN_LABEL).sum()),
            )
        counts[name] = entry
    return counts


def make_manifest(
    config: BuildConfig,
    *,
    engine: str,
    feedback: str,
    rule: LabelRule,
    n_users: int,
    n_items: int,
    input_rows: int,
    facts: PlanFacts,
    counts: dict[str, dict[str, int]],
    files: dict[str, int],
    synthetic_stats: dict[str, float] | None,
) -> Manifest:
    """Assemble the manifest and check that every input row is accounted for (its
    ``shard_files`` are filled when the dataset is written).

    Raises:
        RuntimeError: the outputs do not add up to the input (a bug; nothing is published).
    """
    written = {name: counts[name]["rows"] for name in dd.OUTPUT_SPLITS}
    dropped_unclear_eval = facts.codes["dropped_unclear_eval"]
    dropped_cold = facts.codes["dropped_cold_valid"] + facts.codes["dropped_cold_test"]
    total = sum(written.values()) + facts.duplicates_dropped + dropped_unclear_eval + dropped_cold
    conservation = {
        "input_rows": input_rows,
        "written_rows": written,
        "duplicates_dropped": facts.duplicates_dropped,
        "unclear_evaluation_rows_dropped": dropped_unclear_eval,
        "cold_rows_dropped": dropped_cold,
        "accounted_rows": total,
        "holds": total == input_rows,
        "note": "unlabeled/ rows are sampled items, not input rows, and are not counted here",
    }
    if total != input_rows:
        raise RuntimeError(f"row conservation violated (bug): {conservation}")
    split = _split_dict(config.split)
    synthetic = None
    if config.source.synthetic is not None:
        synthetic = {
            "config": config.source.synthetic.to_dict(),
            "stats": synthetic_stats,
            "truth_file": dd.TRUTH_FILE,
        }
    return Manifest(
        schema_version=SCHEMA_VERSION,
        name=config.dataset_name,
        engine=engine,
        source=config.source.to_dict(),
        feedback=feedback,
        rule=rule_to_dict(rule),
        seed=config.split.seed,
        split={
            "kind": "given" if config.source.kind == "presplit" else "random",
            "fractions": None if config.source.kind == "presplit" else split["fractions"],
            "train_test_fraction": split["train_test_fraction"],
            "cold_policy": split["cold_policy"],
            "rounding": "range ends at floor(n * cumulative_fraction + 1/2)",
        },
        label_fraction=config.split.label_fraction,
        sampling={
            "rate": config.sampling_rate,
            "seed": config.split.seed,
            "epoch": 0,
            "rows": "labeled training rows: train_train by row, then train_test by row",
        },
        shards=config.shards,
        files=files,
        n_users=n_users,
        n_items=n_items,
        input_rows=input_rows,
        duplicates_dropped=facts.duplicates_dropped,
        cold=facts.cold,
        counts=counts,
        conservation=conservation,
        inputs=config.inputs(),
        synthetic=synthetic,
    )


@dataclass
class BuiltDataset:
    """A dataset built in memory: output tables, id maps, planted truth and manifest."""

    tables: dict[str, pa.Table]
    user_map: pa.Table
    item_map: pa.Table
    truth: PlantedTruth | None
    manifest: Manifest


def build_in_memory(config: BuildConfig, parsed: ParsedSource | None = None) -> BuiltDataset:
    """Build ``config`` without Ray (the reference the Ray pipeline is tested against).

    Args:
        config: build options.
        parsed: the already-read source; read from ``config.source`` when None.

    Returns:
        The built dataset, with ``manifest.files`` as if written with ``config.shards``.
    """
    parsed = parsed or read_source(config.source)
    table = parsed.table
    user_map, item_map = id_maps_for(
        table.column(cn.USER_RAW), table.column(cn.ITEM_RAW), parsed.universe
    )
    offsets = cn.file_offsets(parsed.rows_per_file, len(parsed.rows_per_file))
    indexed = index_and_map(table, offsets, user_map, item_map)
    n_users, n_items = len(user_map), len(item_map)
    plan, facts, planned = plan_build(indexed, config, n_users, n_items)
    applied = apply_build_plan(indexed, plan)
    tables = {
        name: split_rows(applied, name, output_schema(name, indexed.column_names))
        for name in dd.OUTPUT_SPLITS
    }
    tables["unlabeled"] = draw_unlabeled(
        planned, n_users, n_items, config.sampling_rate, config.split.seed, parsed.truth
    ).cast(output_schema("unlabeled", indexed.column_names))
    manifest = make_manifest(
        config,
        engine="in-memory",
        feedback=cn.feedback_kind(indexed.column_names),
        rule=plan.rule,
        n_users=n_users,
        n_items=n_items,
        input_rows=table.num_rows,
        facts=facts,
        counts=summarize_outputs(tables),
        files={name: max(1, min(config.shards, t.num_rows)) for name, t in tables.items()},
        synthetic_stats=parsed.stats,
    )
    return BuiltDataset(
        tables=tables,
        user_map=cn.id_map_table(user_map),
        item_map=cn.id_map_table(item_map),
        truth=parsed.truth,
        manifest=manifest,
    )


def write_built_dataset(
    built: BuiltDataset, out_dir: storage.Location, *, shards: int, overwrite: bool = False
) -> Manifest:
    """Write a :class:`BuiltDataset` to ``out_dir``, a local path or a URI (see
    :mod:`dataset_dir` for the policy); returns the manifest as written, every file
    fingerprinted, the manifest last."""
    out = storage.absolute(out_dir)
    dd.check_output_dir(out, built.manifest.inputs, overwrite)
    with publishing.writing_folder(out, dd.MANIFEST_FILE) as target:
        for name, table in built.tables.items():
            dd.write_shards(table, storage.join(target, name), shards)
        dd.write_id_maps(target, built.user_map, built.item_map)
        if built.truth is not None:
            built.truth.save(storage.join(target, dd.TRUTH_FILE))
        manifest = replace(built.manifest, shard_files=dd.fingerprint_files(target))
        manifest.write(target)
    return manifest


def build_dataset_in_memory(
    config: BuildConfig, out_dir: storage.Location, *, overwrite: bool = False
) -> Manifest:
    """Build ``config`` without Ray and write it to ``out_dir`` (a local path or a URI);
    returns the manifest.

    For machines without Ray (the GPU benchmark host); the Ray pipeline writes the same rows.
    """
    out = storage.absolute(out_dir)
    dd.check_output_dir(out, config.inputs(), overwrite)
    built = build_in_memory(config)
    return write_built_dataset(built, out, shards=config.shards, overwrite=overwrite)


def make_synthetic_recdata(config: SyntheticConfig | None = None, **build_options: Any) -> RecData:
    """Generate and build a synthetic dataset in memory — no Ray, no files.

    Args:
        config: generator parameters (default: the ``default`` preset).
        **build_options: fields of :class:`BuildConfig` other than the source (e.g.
            ``split=SplitOptions(label_fraction=0.3)``, ``rule=...``). The split seed defaults
            to ``config.seed``.

    Returns:
        A :class:`~invlearn_ray.data.recdata.RecData` with ``truth`` set to the planted truth.
    """
    synthetic = config or SyntheticConfig()
    build_options.setdefault("split", sp.SplitOptions(seed=synthetic.seed))
    built = build_in_memory(
        BuildConfig(source=SourceSpec.from_synthetic(synthetic), **build_options)
    )
    return recdata_from_tables(
        built.tables,
        n_users=built.manifest.n_users,
        n_items=built.manifest.n_items,
        truth=built.truth,
        name=built.manifest.name,
        manifest=built.manifest,
    )
