"""A built dataset's manifest (``manifest.json``) as a typed record, with its schema check.

The manifest says where the rows came from (source, rule, split options, seed), how many landed
in each split and why the rest did not (the conservation proof), and — since schema version 2 —
what every written Parquet file looked like (:class:`ShardFile`: rows, size, a hash of its
footer and of its bytes), so that loading can prove the files are the ones the build wrote
(:func:`invlearn_ray.data.dataset_dir.verify_dataset`).

Only the fields every reader needs are typed; the provenance blocks (``source``, ``rule``,
``split``, ...) stay the plain JSON objects they are written as.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from invlearn_ray import storage
from invlearn_ray.data.errors import DatasetFormatError

SCHEMA_VERSION = 2
"""1: no per-file records (cannot be verified); 2: :attr:`Manifest.shard_files`."""
MANIFEST_FILE = "manifest.json"
REBUILD = "Rebuild the dataset with this version's pipelines/build_data.py."


@dataclass(frozen=True)
class ShardFile:
    """One written Parquet file, as the build left it.

    Attributes:
        name: the file's name inside its folder.
        rows: rows it holds (from its footer).
        bytes: its size.
        footer_sha256: SHA-256 of its footer (the file's last ``8 + footer length`` bytes:
            schema, row groups, column offsets and statistics) — the default check.
        sha256: SHA-256 of the whole file — the full check.
    """

    name: str
    rows: int
    bytes: int
    footer_sha256: str
    sha256: str


@dataclass
class Manifest:
    """Everything ``manifest.json`` records; see ``data/build.py``'s ``make_manifest``.

    Attributes:
        shard_files: per folder (each split, ``unlabeled``, ``id_map``), its files in name
            order; filled when the dataset is written (empty for a dataset built in memory).
    """

    schema_version: int
    name: str
    engine: str
    source: dict[str, Any]
    feedback: str
    rule: dict[str, Any]
    seed: int
    split: dict[str, Any]
    label_fraction: float
    sampling: dict[str, Any]
    shards: int
    files: dict[str, int]
    n_users: int
    n_items: int
    input_rows: int
    duplicates_dropped: int
    cold: dict[str, Any]
    counts: dict[str, dict[str, int]]
    conservation: dict[str, Any]
    inputs: dict[str, Any]
    synthetic: dict[str, Any] | None = None
    shard_files: dict[str, list[ShardFile]] = field(default_factory=dict)

    def rows(self, split: str) -> int:
        """Rows written to ``split`` (any output folder: a split, ``unclear``, ``unlabeled``)."""
        return self.counts[split]["rows"]

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``manifest.json`` holds (``synthetic`` only for synthetic sources)."""
        values = asdict(self)
        if self.synthetic is None:
            del values["synthetic"]
        return values

    @classmethod
    def from_json(cls, values: Any, source: str = MANIFEST_FILE) -> Manifest:
        """Check and type a manifest read from ``source``.

        Raises:
            DatasetFormatError: another schema version, or keys missing or unknown (one line,
                naming ``source`` and what to do).
        """
        version = values.get("schema_version") if isinstance(values, dict) else None
        if version != SCHEMA_VERSION:
            raise DatasetFormatError(
                f"{source}: schema_version {version!r}, but this code reads version "
                f"{SCHEMA_VERSION}. {REBUILD}"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = {name for name, f in fields.items() if f.default is dataclasses.MISSING}
        required -= {"shard_files"}
        missing, unknown = sorted(required - set(values)), sorted(set(values) - set(fields))
        if missing or unknown:
            raise DatasetFormatError(
                f"{source}: not a manifest this code wrote (missing {missing}, unknown "
                f"{unknown}). {REBUILD}"
            )
        try:
            shard_files = {
                folder: [ShardFile(**record) for record in records]
                for folder, records in values.get("shard_files", {}).items()
            }
        except TypeError as error:
            raise DatasetFormatError(
                f"{source}: malformed shard_files ({error}). {REBUILD}"
            ) from None
        return cls(**{**values, "shard_files": shard_files})

    @classmethod
    def read(cls, directory: storage.Location) -> Manifest:
        """Read and check the manifest of the dataset folder ``directory`` (a location).

        Raises:
            DatasetFormatError: no such folder, no manifest (also: a build that never finished
                writing it), unreadable JSON, or a manifest of another schema version.
            StorageError: the location cannot be reached.
        """
        directory = os.fspath(directory)
        if not storage.is_dir(directory):
            raise DatasetFormatError(
                f"{directory}: no such dataset folder. Build one with pipelines/build_data.py."
            )
        path = storage.join(directory, MANIFEST_FILE)
        if not storage.is_file(path):
            raise DatasetFormatError(
                f"{directory}: not a built dataset (no {MANIFEST_FILE}). Point at a folder "
                "written by pipelines/build_data.py."
            )
        try:
            values = json.loads(storage.read_text(path))
        except json.JSONDecodeError as error:
            raise DatasetFormatError(f"{path}: not valid JSON ({error}). {REBUILD}") from None
        return cls.from_json(values, path)

    def write(self, directory: storage.Location) -> None:
        """Write ``manifest.json`` into ``directory`` — the last file a build writes."""
        storage.write_text(
            storage.join(directory, MANIFEST_FILE), json.dumps(self.to_json(), indent=2) + "\n"
        )
