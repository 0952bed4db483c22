"""The on-disk layout of a built dataset (schema version 1), and safe writing of it.

::

    <out>/manifest.json          provenance, counts and the conservation proof
    <out>/id_map/users.parquet   raw_id (string) -> index (int64); items.parquet likewise
    <out>/train_train/ train_test/ valid/ test/   labeled rows, Parquet shards
    <out>/unclear/               observed-unlabeled rows (hidden_label, origin)
    <out>/unlabeled/             the epoch-0 draw of sampled unlabeled items
    <out>/truth.npz              planted truth (synthetic sources only)

A build writes into a hidden staging folder beside ``<out>`` and swaps it in at the end, so an
interrupted build never leaves a half-written dataset behind a valid-looking manifest.

Rebuild policy: an output folder that already holds a dataset built from the *same inputs*
(same manifest ``inputs`` block: options and source file sizes/mtimes) is rebuilt in place; a
*different* dataset is refused unless ``overwrite``; a non-empty folder without a manifest is
always refused, so an overwrite can never delete unrelated files.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from invlearn_ray.data.errors import DatasetFormatError, OutputDirectoryError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
ID_MAP_DIR = "id_map"
TRUTH_FILE = "truth.npz"
LABELED_SPLITS = ("train_train", "train_test", "valid", "test")
OUTPUT_SPLITS = (*LABELED_SPLITS, "unclear")
"""Folders holding input rows (their counts add up to the input)."""
ALL_SPLITS = (*OUTPUT_SPLITS, "unlabeled")

HIDDEN_LABEL = "hidden_label"
"""Column of ``unclear/`` and ``unlabeled/``: the true label, -1 where unknown."""
ORIGIN = "origin"
"""Column of ``unclear/``: ``"unclear"`` (feedback between thresholds) or ``"label_fraction"``."""
SOURCE_ROW = "source_row"
"""Column of ``unlabeled/``: the ``row`` of the labeled training row an item was drawn for."""
ORIGIN_UNCLEAR = "unclear"
ORIGIN_LABEL_FRACTION = "label_fraction"


def check_output_dir(out: Path, inputs: dict[str, Any], overwrite: bool) -> None:
    """Refuse to build into ``out`` when that would replace something it must not.

    Raises:
        OutputDirectoryError: ``out`` is a file, a non-empty folder without a manifest, or holds
            a different dataset and ``overwrite`` is False.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputDirectoryError(f"{out} is a file, not a folder. Choose another output path.")
    if not any(out.iterdir()):
        return
    manifest_path = out / MANIFEST_FILE
    if not manifest_path.is_file():
        raise OutputDirectoryError(
            f"{out} is not empty and holds no {MANIFEST_FILE}, so it is not a dataset; refusing "
            "to write there (even with overwrite, which only replaces datasets). Choose an empty "
            "or new output folder."
        )
    try:
        existing = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        existing = {}
    if existing.get("inputs") == inputs or overwrite:
        return
    raise OutputDirectoryError(
        f"{out} already holds a different dataset ({existing.get('name', 'unnamed')!r}, built "
        f"from {existing.get('source', {}).get('kind', 'an unknown source')!r} with other "
        "options). Pass overwrite=True (--overwrite) to replace it, or choose another --out."
    )


def staging_dir(out: Path) -> Path:
    """A fresh hidden folder beside ``out`` to build into."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    return staging


def publish(staging: Path, out: Path) -> None:
    """Swap the finished ``staging`` folder in as ``out`` (replacing a previous dataset)."""
    retired = None
    if out.exists():
        retired = out.parent / f".{out.name}.replaced-{uuid.uuid4().hex[:12]}"
        out.rename(retired)
    staging.rename(out)
    if retired is not None:
        shutil.rmtree(retired)


def discard(staging: Path) -> None:
    """Remove a staging folder after a failed build."""
    shutil.rmtree(staging, ignore_errors=True)


def write_shards(table: pa.Table, directory: Path, shards: int) -> int:
    """Write ``table`` as up to ``shards`` Parquet files of contiguous, near-equal row ranges.

    An empty table still gets one (empty) file, so every split folder carries its schema.

    Returns:
        The number of files written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    n_files = max(1, min(shards, table.num_rows))
    bounds = np.linspace(0, table.num_rows, n_files + 1).round().astype(int)
    for index in range(n_files):
        part = table.slice(bounds[index], bounds[index + 1] - bounds[index])
        pq.write_table(part, directory / f"part-{index:05d}-of-{n_files:05d}.parquet")
    return n_files


def parquet_files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.glob("*.parquet") if path.is_file())


def ensure_schema_file(directory: Path, schema: pa.Schema) -> None:
    """Write one empty file with ``schema`` into a folder a distributed writer left empty."""
    directory.mkdir(parents=True, exist_ok=True)
    if not parquet_files(directory):
        pq.write_table(schema.empty_table(), directory / "part-00000-of-00001.parquet")


def read_split(directory: Path, columns: list[str] | None = None) -> pa.Table:
    """Read every Parquet shard of a split folder into one table.

    Raises:
        DatasetFormatError: the folder is missing or holds no shards.
    """
    files = parquet_files(directory) if directory.is_dir() else []
    if not files:
        raise DatasetFormatError(
            f"{directory}: missing or empty split folder. Rebuild the dataset with "
            "pipelines/build_data.py."
        )
    return pa.concat_tables([pq.read_table(path, columns=columns) for path in files])


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and check a dataset's manifest.

    Raises:
        DatasetFormatError: no such folder, no manifest, unreadable JSON, or another schema
            version.
    """
    if not directory.is_dir():
        raise DatasetFormatError(
            f"{directory}: no such dataset folder. Build one with pipelines/build_data.py."
        )
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise DatasetFormatError(
            f"{directory}: not a built dataset (no {MANIFEST_FILE}). Point at a folder written "
            "by pipelines/build_data.py."
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetFormatError(
            f"{path}: not valid JSON ({error}). Rebuild the dataset."
        ) from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise DatasetFormatError(
            f"{path}: schema_version {version!r}, but this code reads version {SCHEMA_VERSION}. "
            "Rebuild the dataset with this version's pipelines/build_data.py."
        )
    return manifest


def write_id_maps(directory: Path, user_map: pa.Table, item_map: pa.Table) -> None:
    (directory / ID_MAP_DIR).mkdir(parents=True, exist_ok=True)
    pq.write_table(user_map, directory / ID_MAP_DIR / "users.parquet")
    pq.write_table(item_map, directory / ID_MAP_DIR / "items.parquet")


def read_id_maps(directory: Path) -> tuple[pa.Table, pa.Table]:
    """The saved ``(raw_id, index)`` tables of users and items."""
    return tuple(
        pq.read_table(directory / ID_MAP_DIR / f"{kind}.parquet") for kind in ("users", "items")
    )
