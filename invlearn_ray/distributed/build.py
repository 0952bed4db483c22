"""Build a dataset with Ray Data: the data layer's pure steps as dataset transforms.

The same code runs on a laptop's local Ray and on a cluster (``ray.init(address=...)``). On a
cluster the output must be a location every node reaches (``s3://...``, ``gs://...``): the
write tasks run on whichever worker has room and write their shards straight there, and the
driver reads back only from there — never from a worker's disk, which it cannot see. A local
``out_dir`` is refused when the cluster has more than one node. Stages:

1. **read** — ``ray.data.read_binary_files`` over the source files, parsed by
   :func:`~invlearn_ray.data.readers.parse_file` in ``map_batches``, one task per file (line
   numbers need a whole file). A parse error does not fail its task: Ray Data re-raises task
   errors as a generic ``UserCodeException`` that loses the original, so the error travels as a
   pickled value in a ``parse_error`` column and the driver raises the first one in file order —
   the exact ``InputFormatError`` (file, line, column) the in-memory path raises. A synthetic
   source is generated the same way: the driver prepares the generator (truth, item tables,
   exposure), and one task per block of users generates that block's rows (``file`` = block),
   so no process ever holds more than a block of generated rows beyond the dataset itself;
2. **summarize** — per-block row counts per file and distinct raw ids (a map, then a small
   collect), from which the driver builds the id maps and each file's row offset;
3. **index** — ``map_batches(index_and_map)``: global ``row`` ids and contiguous indices;
4. **plan** — the driver collects the key columns (ids, feedback, given split) and runs
   :func:`~invlearn_ray.data.build.plan_build`: de-duplication, fitted labeling rule, split
   cuts, training presence for cold rows. These decisions are global by nature; deciding them
   once from narrow columns keeps every row's fate independent of Ray's block layout;
5. **apply** — ``map_batches(apply_build_plan)`` on the full rows; then per output folder
   ``map_batches(split_rows)``, ``repartition(shards)`` and ``write_parquet``;
6. **unlabeled** — the epoch-0 draw is computed on the driver from the planned keys (exact
   exclusion needs each user's whole training item set, and the draw must not depend on
   blocks) and written with Ray Data;
7. **manifest** — counts are read back from the written files, so the conservation check in
   the manifest proves what is in storage, and every written file is fingerprinted for loading
   to verify; the manifest is written last (the commit record on an object store, see
   :func:`~invlearn_ray.data.publishing.writing_folder`).

The result equals :func:`~invlearn_ray.data.build.build_in_memory` row for row (tested).
"""

from __future__ import annotations

import os
import pickle
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from invlearn_ray import storage
from invlearn_ray.data import canonical as cn
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data import publishing
from invlearn_ray.data.build import (
    BuildConfig,
    apply_build_plan,
    draw_unlabeled,
    id_maps_for,
    index_and_map,
    make_manifest,
    output_schema,
    plan_build,
    planning_columns,
    split_rows,
    summarize_outputs,
    summary_columns,
)
from invlearn_ray.data.errors import DataError
from invlearn_ray.data.manifest import Manifest
from invlearn_ray.data.readers import parse_file
from invlearn_ray.data.sources import SourceSpec, check_not_empty, synthetic_universe
from invlearn_ray.data.synthetic import ROW_COUNTS, PlantedTruth, SyntheticGenerator, count_rows
from invlearn_ray.distributed.session import check_reachable_from_workers

PARSE_ERROR = "parse_error"


@contextmanager
def _ordered_execution():
    """Keep block order through the pipeline (stable shard contents and draw order)."""
    context = ray.data.DataContext.get_current()
    previous = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    try:
        yield
    finally:
        context.execution_options.preserve_order = previous


def _parse_files(batch: pa.Table, source: SourceSpec, schema: pa.Schema) -> pa.Table:
    """``map_batches`` step: parse whole files; a parse error becomes a ``parse_error`` row."""
    index_of = {os.path.normpath(path): index for index, path in enumerate(source.paths)}
    parts = []
    paths = batch.column("path").to_pylist()
    for path, data in zip(paths, batch.column("bytes").to_pylist(), strict=True):
        index = index_of[os.path.normpath(path)]
        try:
            table = parse_file(
                data,
                source.file_format,
                path=source.paths[index],
                file_index=index,
                given_split=source.given_split(index),
            ).cast(schema)
            errors = pa.nulls(table.num_rows, pa.binary())
        except DataError as error:
            table = _error_row(schema, index, error)
            errors = pa.array([pickle.dumps(error)], type=pa.binary())
        parts.append(table.append_column(PARSE_ERROR, errors))
    return pa.concat_tables(parts)


def _error_row(schema: pa.Schema, file_index: int, error: DataError) -> pa.Table:
    """A one-row stand-in for a file that failed to parse: nulls but its file and line.

    The line (0 for file-level errors) lets the driver raise the first error in file order.
    """
    position = {cn.FILE: file_index, cn.LINE: getattr(error, "line", None) or 0}
    return pa.table(
        {field.name: pa.array([position.get(field.name)], type=field.type) for field in schema}
    )


_SUMMARY_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("raw_id", pa.string()),
        (cn.FILE, pa.int32()),
        (cn.LINE, pa.int64()),
        ("count", pa.int64()),
        (PARSE_ERROR, pa.binary()),
    ]
)


def _summary(kind: str, length: int, **columns: Any) -> pa.Table:
    """Summary rows of one kind; columns not given are null."""
    return pa.table(
        {
            field.name: pa.array([kind] * length, type=field.type)
            if field.name == "kind"
            else pa.array(columns[field.name], type=field.type)
            if field.name in columns
            else pa.nulls(length, field.type)
            for field in _SUMMARY_SCHEMA
        }
    )


def _summarize_block(batch: pa.Table) -> pa.Table:
    """``map_batches`` step: rows per file, distinct raw ids and parse errors of one block."""
    failed = pc.is_valid(batch.column(PARSE_ERROR))
    rows = batch.filter(pc.invert(failed))
    errors = batch.filter(failed)
    files, counts = np.unique(rows.column(cn.FILE).to_numpy(), return_counts=True)
    users = pc.unique(rows.column(cn.USER_RAW))
    items = pc.unique(rows.column(cn.ITEM_RAW))
    return pa.concat_tables(
        [
            _summary("file", len(files), file=files, count=counts),
            _summary("user", len(users), raw_id=users),
            _summary("item", len(items), raw_id=items),
            _summary(
                "error",
                errors.num_rows,
                file=errors.column(cn.FILE),
                line=errors.column(cn.LINE),
                parse_error=errors.column(PARSE_ERROR),
            ),
        ]
    )


def _collect(dataset: ray.data.Dataset) -> pa.Table:
    """Gather a (narrow) dataset into one table on the driver."""
    tables = ray.get(dataset.to_arrow_refs())
    return pa.concat_tables(tables) if tables else pa.table({})


def _index_rows(batch: pa.Table, offsets: np.ndarray, user_map: pa.Array, item_map: pa.Array):
    return index_and_map(batch.drop_columns([PARSE_ERROR]), offsets, user_map, item_map)


def _generate_blocks(batch: pa.Table, generator: SyntheticGenerator) -> pa.Table:
    """``map_batches`` step: the rows of the synthetic blocks numbered in ``batch["id"]``."""
    table = pa.concat_tables([generator.block(index) for index in batch.column("id").to_pylist()])
    return table.append_column(PARSE_ERROR, pa.nulls(table.num_rows, pa.binary()))


def _count_generated(batch: pa.Table, generator: SyntheticGenerator) -> pa.Table:
    """``map_batches`` step: one row of :func:`~invlearn_ray.data.synthetic.count_rows`."""
    counts = count_rows(batch, generator.config)
    return pa.table({name: [counts[name]] for name in ROW_COUNTS})


def _read(source: SourceSpec) -> tuple[ray.data.Dataset, int, PlantedTruth | None, dict | None]:
    """Stage 1: the parsed source as a materialized dataset (with a ``parse_error`` column).

    Returns the dataset, its number of files (blocks, for a synthetic source), and a synthetic
    source's truth and generation statistics.
    """
    if source.kind == "synthetic":
        generator = SyntheticGenerator.prepare(source.synthetic)
        n_blocks = len(generator.blocks)
        parsed = (
            ray.data.range(n_blocks, override_num_blocks=n_blocks)
            .map_batches(
                _generate_blocks,
                batch_size=1,
                batch_format="pyarrow",
                fn_kwargs={"generator": generator},
            )
            .materialize()
        )
        counts = _collect(
            parsed.map_batches(
                _count_generated,
                batch_size=None,
                batch_format="pyarrow",
                fn_kwargs={"generator": generator},
            )
        )
        totals = {name: int(pc.sum(counts.column(name)).as_py() or 0) for name in ROW_COUNTS}
        return parsed, n_blocks, generator.truth, generator.stats(totals)
    parsed = ray.data.read_binary_files(list(source.paths), include_paths=True).map_batches(
        _parse_files,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"source": source, "schema": source.parsed_schema()},
    )
    return parsed.materialize(), len(source.paths), None, None


def build_dataset(
    config: BuildConfig, out_dir: storage.Location, *, overwrite: bool = False
) -> Manifest:
    """Build ``config`` with Ray Data and write it to ``out_dir``; returns the manifest.

    Ray is used as initialized by the caller (see ``invlearn_ray.distributed.session``), or
    started locally by Ray Data on first use.

    Args:
        config: what to build (source, rule, split options, sampling rate, shards).
        out_dir: the dataset folder, a local path or a URI (policy: see
            :mod:`invlearn_ray.data.dataset_dir`); on a multi-node cluster, a URI.
        overwrite: replace a different dataset already in ``out_dir``.

    Raises:
        InputFormatError: the first bad line of the source, in file order.
        EmptyInputError, EmptySplitError: nothing to build, or a labeled split would be empty.
        OutputDirectoryError: ``out_dir`` holds something the build must not replace, or is
            local on a multi-node cluster.
        StorageError: ``out_dir`` cannot be reached.
    """
    out = storage.absolute(out_dir)
    dd.check_output_dir(out, config.inputs(), overwrite)
    check_reachable_from_workers(out)
    source = config.source.resolved()
    with _ordered_execution():
        parsed, n_files, truth, stats = _read(source)
        summary = _collect(parsed.map_batches(_summarize_block, batch_format="pyarrow"))
        _raise_first_parse_error(summary)
        kinds = np.asarray(summary.column("kind").to_pylist(), dtype=object)
        files = summary.column(cn.FILE).to_numpy()[kinds == "file"]
        counts = summary.column("count").to_numpy()[kinds == "file"]
        rows_per_file = {i: int(counts[files == i].sum()) for i in range(n_files)}
        input_rows = sum(rows_per_file.values())
        check_not_empty(input_rows, source)
        raw_ids = summary.column("raw_id")
        universe = synthetic_universe(source.synthetic) if source.synthetic else None
        user_map, item_map = id_maps_for(
            raw_ids.filter(pa.array(kinds == "user")),
            raw_ids.filter(pa.array(kinds == "item")),
            universe,
        )
        n_users, n_items = len(user_map), len(item_map)
        indexed = parsed.map_batches(
            _index_rows,
            batch_format="pyarrow",
            fn_kwargs={
                "offsets": cn.file_offsets(rows_per_file, n_files),
                "user_map": user_map,
                "item_map": item_map,
            },
        ).materialize()
        # A materialized dataset pins its blocks in the object store while it is referenced:
        # drop each stage once the next holds the rows, so at most two copies coexist.
        del parsed
        keys = _collect(indexed.select_columns(planning_columns(indexed.columns())))
        plan, facts, planned = plan_build(keys, config, n_users, n_items)
        columns = indexed.columns()
        unlabeled = draw_unlabeled(
            planned, n_users, n_items, config.sampling_rate, config.split.seed, truth
        ).cast(output_schema("unlabeled", columns))

        with publishing.writing_folder(out, dd.MANIFEST_FILE) as target:
            applied = indexed.map_batches(
                apply_build_plan, batch_format="pyarrow", fn_kwargs={"plan": plan}
            ).materialize()
            del indexed
            for name in dd.OUTPUT_SPLITS:
                schema = output_schema(name, columns)
                rows = applied.map_batches(
                    split_rows,
                    batch_format="pyarrow",
                    fn_kwargs={"name": name, "schema": schema},
                )
                _write_parquet(rows.repartition(config.shards), storage.join(target, name))
                dd.ensure_schema_file(storage.join(target, name), schema)
            _write_parquet(
                ray.data.from_arrow(unlabeled).repartition(config.shards),
                storage.join(target, "unlabeled"),
            )
            dd.ensure_schema_file(storage.join(target, "unlabeled"), unlabeled.schema)
            written = {
                name: dd.read_split(storage.join(target, name), columns=summary_columns(name))
                for name in dd.ALL_SPLITS
            }
            manifest = make_manifest(
                config,
                engine="ray",
                feedback=cn.feedback_kind(columns),
                rule=plan.rule,
                n_users=n_users,
                n_items=n_items,
                input_rows=input_rows,
                facts=facts,
                counts=summarize_outputs(written),
                files={
                    name: len(dd.parquet_files(storage.join(target, name)))
                    for name in dd.ALL_SPLITS
                },
                synthetic_stats=stats,
            )
            dd.write_id_maps(target, cn.id_map_table(user_map), cn.id_map_table(item_map))
            if truth is not None:
                truth.save(storage.join(target, dd.TRUTH_FILE))
            manifest = replace(manifest, shard_files=dd.fingerprint_files(target))
            manifest.write(target)
    return manifest


def _write_parquet(dataset: ray.data.Dataset, location: str) -> None:
    """Write ``dataset``'s blocks as Parquet files into the folder ``location``, from the tasks
    that hold them (the file system travels with the tasks; each resolves its credentials where
    it runs)."""
    filesystem, path = storage.resolve(location)
    dataset.write_parquet(path, filesystem=filesystem)


def _raise_first_parse_error(summary: pa.Table) -> None:
    errors = summary.filter(pc.is_valid(summary.column(PARSE_ERROR)))
    if not errors.num_rows:
        return
    order = np.lexsort((errors.column(cn.LINE).to_numpy(), errors.column(cn.FILE).to_numpy()))
    raise pickle.loads(errors.column(PARSE_ERROR)[int(order[0])].as_py())
