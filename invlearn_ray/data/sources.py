"""What a dataset is built from: files of a known format, or the synthetic generator.

A :class:`SourceSpec` names the source; :func:`read_source` turns it into the canonical parsed
table in memory (the Ray pipeline reads the same files with Ray Data and the same parser).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from invlearn_ray.data.errors import DataError, EmptyInputError
from invlearn_ray.data.readers import FileFormat, expected_schema, parse_file, resolve_format
from invlearn_ray.data.synthetic import PlantedTruth, SyntheticConfig, generate_interactions

SOURCE_KINDS = ("synthetic", "ml1m", "ml100k", "inter", "presplit", "csv", "parquet")
"""Source kinds: the synthetic generator, or one of the file formats of :mod:`readers`."""

PRESPLIT_SUFFIXES = (".train.rating", ".valid.rating", ".test.negative")
"""File name endings of the paper's pre-split files, in ``given_split`` code order."""


@dataclass(frozen=True)
class SourceSpec:
    """A data source.

    Attributes:
        kind: one of ``SOURCE_KINDS``.
        paths: absolute file paths, in the order their rows are numbered.
        columns: ``(canonical, source)`` column mapping for ``inter``/``csv``/``parquet``.
        delimiter: CSV field separator.
        name: dataset name (manifest, default output folder).
        synthetic: generator parameters of a ``synthetic`` source.
    """

    kind: str
    paths: tuple[str, ...] = ()
    columns: tuple[tuple[str, str], ...] = ()
    delimiter: str = ","
    name: str = ""
    synthetic: SyntheticConfig | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}; valid: {list(SOURCE_KINDS)}")
        if (self.kind == "synthetic") != (self.synthetic is not None):
            raise ValueError("a synthetic source needs a SyntheticConfig, and only it")
        if self.kind != "synthetic" and not self.paths:
            raise ValueError(f"a {self.kind!r} source needs at least one file")
        if self.kind == "presplit" and len(self.paths) != len(PRESPLIT_SUFFIXES):
            raise ValueError("a presplit source has exactly a train, a valid and a test file")
        if self.kind != "synthetic":
            FileFormat(self.kind, self.columns, self.delimiter)

    @classmethod
    def from_synthetic(cls, config: SyntheticConfig, name: str = "synthetic") -> SourceSpec:
        return cls(kind="synthetic", synthetic=config, name=name)

    @classmethod
    def from_files(
        cls,
        kind: str,
        *paths: str | Path,
        columns: dict[str, str] | None = None,
        delimiter: str = ",",
        name: str | None = None,
    ) -> SourceSpec:
        """A file source; a directory stands for the files in it with the format's extension.

        Raises:
            DataError: a path that does not exist, or a directory without matching files.
        """
        files: list[str] = []
        for path in map(Path, paths):
            if path.is_dir():
                suffix = {"parquet": ".parquet", "csv": ".csv", "inter": ".inter"}.get(kind, "")
                found = sorted(str(p.resolve()) for p in path.glob(f"*{suffix}") if p.is_file())
                if not found:
                    raise DataError(
                        f"{path}: directory holds no {suffix or 'data'} files for a {kind!r} "
                        "source. Point the source at the data files."
                    )
                files.extend(found)
            elif path.is_file():
                files.append(str(path.resolve()))
            else:
                raise DataError(f"{path}: no such file. Check the source path.")
        default_name = Path(files[0]).name.split(".")[0] if files else kind
        return cls(
            kind=kind,
            paths=tuple(files),
            columns=tuple((columns or {}).items()),
            delimiter=delimiter,
            name=name or default_name,
        )

    @classmethod
    def presplit(cls, directory: str | Path, name: str) -> SourceSpec:
        """The paper's pre-split files ``{name}.train.rating``, ``.valid.rating``,
        ``.test.negative`` in ``directory``."""
        directory = Path(directory)
        paths = [directory / f"{name}{suffix}" for suffix in PRESPLIT_SUFFIXES]
        missing = [str(path) for path in paths if not path.is_file()]
        if missing:
            raise DataError(
                f"pre-split source {name!r} in {directory}: missing {missing}. Pass the folder "
                f"holding {name}.train.rating, {name}.valid.rating and {name}.test.negative."
            )
        return cls(kind="presplit", paths=tuple(str(p.resolve()) for p in paths), name=name)

    @property
    def file_format(self) -> FileFormat:
        return FileFormat(self.kind, self.columns, self.delimiter)

    def given_split(self, file_index: int) -> int | None:
        """The ``given_split`` code of a file's rows (pre-split sources only)."""
        return file_index if self.kind == "presplit" else None

    def resolved(self) -> SourceSpec:
        """The spec with its column mapping fixed from the first file (see ``resolve_format``)."""
        if self.kind == "synthetic":
            return self
        fmt = resolve_format(self.paths[0], self.file_format)
        return replace(self, columns=fmt.columns)

    def parsed_schema(self) -> pa.Schema:
        """Schema of every parsed file of this (resolved) source."""
        return expected_schema(self.file_format, presplit=self.kind == "presplit")

    def fingerprints(self) -> list[dict[str, Any]]:
        """Size and modification time of each file: what "the same input" means on rebuild."""
        return [
            {"path": path, "bytes": os.path.getsize(path), "mtime_ns": os.stat(path).st_mtime_ns}
            for path in self.paths
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "paths": list(self.paths),
            "columns": dict(self.columns),
            "delimiter": self.delimiter,
            "name": self.name,
            "synthetic": None if self.synthetic is None else self.synthetic.to_dict(),
        }


@dataclass(frozen=True)
class ParsedSource:
    """A source read into memory.

    Attributes:
        table: canonical parsed rows of every file (``file``/``line``/``file_row`` columns).
        rows_per_file: data rows of each file, by file index.
        universe: for synthetic sources, every user and item raw id (ids exist without rows).
        truth: the planted truth of a synthetic source.
        stats: generation statistics of a synthetic source.
    """

    table: pa.Table
    rows_per_file: dict[int, int]
    universe: tuple[pa.Array, pa.Array] | None = None
    truth: PlantedTruth | None = None
    stats: dict[str, float] | None = None


def synthetic_universe(config: SyntheticConfig) -> tuple[pa.Array, pa.Array]:
    """Raw ids of every synthetic user and item (``"0".."n-1"``)."""
    return tuple(
        pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string())
        for n in (config.n_users, config.n_items)
    )


def check_not_empty(n_rows: int, spec: SourceSpec) -> None:
    if n_rows == 0:
        where = ", ".join(spec.paths) or spec.kind
        raise EmptyInputError(
            f"{where}: the source holds no data rows. Point the build at a file with "
            "interactions (blank lines and headers are not rows)."
        )


def read_source(spec: SourceSpec) -> ParsedSource:
    """Read every file of ``spec`` (or run its generator) into one canonical parsed table.

    Raises:
        InputFormatError: any bad line (see :func:`~invlearn_ray.data.readers.parse_file`).
        EmptyInputError: the source has no data rows at all.
    """
    if spec.kind == "synthetic":
        generated = generate_interactions(spec.synthetic)
        check_not_empty(generated.table.num_rows, spec)
        return ParsedSource(
            table=generated.table,
            rows_per_file=dict(enumerate(generated.rows_per_block)),
            universe=synthetic_universe(spec.synthetic),
            truth=generated.truth,
            stats=generated.stats,
        )
    spec = spec.resolved()
    schema = spec.parsed_schema()
    tables = []
    for index, path in enumerate(spec.paths):
        with open(path, "rb") as handle:
            data = handle.read()
        tables.append(
            parse_file(
                data,
                spec.file_format,
                path=path,
                file_index=index,
                given_split=spec.given_split(index),
            ).cast(schema)
        )
    table = pa.concat_tables(tables)
    check_not_empty(table.num_rows, spec)
    return ParsedSource(
        table=table,
        rows_per_file={index: t.num_rows for index, t in enumerate(tables)},
    )
