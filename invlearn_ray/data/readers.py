"""Parse one source file's bytes into the canonical interaction table.

Every reader here is a pure function of ``(bytes, format, file index)``. The in-memory builder
calls it on files it opened; the Ray Data pipeline calls the same function inside
``map_batches`` over ``ray.data.read_binary_files`` — one task per file, which keeps the line
numbers that errors and "keep last" de-duplication need (a reader that splits a file across
blocks loses them). Split large inputs into several files to parse them in parallel.

Formats:

* ``ml1m`` — MovieLens-1M ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``;
* ``ml100k`` — MovieLens-100K ``u.data``: tab-separated ``user item rating timestamp``;
* ``presplit`` — the paper's released files ``{name}.train.rating`` / ``.valid.rating`` /
  ``.test.negative``: tab-separated ``user item rating``;
* ``inter`` — RecBole atomic ``.inter``: tab-separated, typed header ``user_id:token ...``;
* ``csv`` — a header row, any one-character delimiter, a column mapping;
* ``parquet`` — a column mapping.

Parsing reads every field as text first and converts column by column, so a bad value is
reported with its file, line and column rather than as a bare conversion failure.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from invlearn_ray.data import canonical as cn
from invlearn_ray.data.errors import InputFormatError

_UNIT_SEPARATOR = "\x1f"
"""Stands in for multi-character delimiters (``::``), which pyarrow's CSV parser lacks."""

_DEFAULT_INTER_FIELDS = {
    cn.USER_RAW: "user_id",
    cn.ITEM_RAW: "item_id",
    cn.RATING: "rating",
    cn.LABEL: "label",
    cn.PLAY_TIME: "play_time",
    cn.DURATION: "duration",
    cn.TIMESTAMP: "timestamp",
}

_FIXED_FIELDS = {
    "ml1m": ("::", (cn.USER_RAW, cn.ITEM_RAW, cn.RATING, cn.TIMESTAMP)),
    "ml100k": ("\t", (cn.USER_RAW, cn.ITEM_RAW, cn.RATING, cn.TIMESTAMP)),
    "presplit": ("\t", (cn.USER_RAW, cn.ITEM_RAW, cn.RATING)),
}

MAPPABLE_COLUMNS = ("user", "item", *cn.VALUE_COLUMNS)
"""Canonical names a column mapping (``user=uid,item=iid,...``) may assign."""


@dataclass(frozen=True)
class FileFormat:
    """How to parse a file.

    Attributes:
        kind: one of ``FORMATS``.
        columns: ``(canonical, source)`` pairs for ``inter``/``csv``/``parquet``; canonical names
            are those of ``MAPPABLE_COLUMNS``. Empty: the format's default names
            (``user_id``/``item_id``/... for ``inter``; ``user``/``item``/... otherwise).
        delimiter: field separator of ``csv``.
    """

    kind: str
    columns: tuple[tuple[str, str], ...] = ()
    delimiter: str = ","

    def __post_init__(self) -> None:
        if self.kind not in FORMATS:
            raise ValueError(f"unknown file format {self.kind!r}; valid: {sorted(FORMATS)}")
        unknown = sorted({name for name, _ in self.columns} - set(MAPPABLE_COLUMNS))
        if unknown:
            raise ValueError(
                f"column mapping names unknown canonical columns {unknown}; "
                f"valid: {list(MAPPABLE_COLUMNS)}"
            )
        if self.columns and self.kind not in ("inter", "csv", "parquet"):
            raise ValueError(f"format {self.kind!r} has fixed columns; it takes no mapping")
        if self.kind == "csv" and len(self.delimiter) != 1:
            raise ValueError(f"a CSV delimiter must be one character, got {self.delimiter!r}")


def _check_utf8(data: bytes, path: str) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputFormatError(
            f"byte {error.start} is not valid UTF-8",
            path=path,
            line=data.count(b"\n", 0, error.start) + 1,
            fix="Re-save the file as UTF-8.",
        ) from None


def _read_text_columns(
    data: bytes, *, path: str, names: list[str], delimiter: str, header_lines: int, quoting: bool
) -> tuple[dict[str, pa.Array], np.ndarray]:
    """Split delimited text into string columns and the line number of each data row.

    Blank lines are skipped; any other line with the wrong number of fields is an error.
    """
    shown_delimiter = delimiter
    if len(delimiter) > 1:
        data = data.replace(delimiter.encode(), _UNIT_SEPARATOR.encode())
        delimiter = _UNIT_SEPARATOR
    skipped: list[int] = []
    malformed: list[tuple[int, str, int, int]] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        if row.text.strip() == "":
            skipped.append(row.number)
            return "skip"
        malformed.append((row.number, row.text, row.expected_columns, row.actual_columns))
        return "error"

    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(
                use_threads=False, column_names=names, skip_rows=header_lines
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                quote_char='"' if quoting else False,
                ignore_empty_lines=False,
                invalid_row_handler=on_invalid_row,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as error:
        if malformed:
            number, text, expected, actual = malformed[0]
            raise InputFormatError(
                f"expected {expected} fields separated by {shown_delimiter!r}, found {actual} "
                f"in {text[:80].replace(_UNIT_SEPARATOR, shown_delimiter)!r}",
                path=path,
                line=number,
                fix="Correct or remove that line.",
            ) from None
        raise InputFormatError(
            f"cannot be parsed as delimited text ({error})",
            path=path,
            fix="Check the format and delimiter.",
        ) from None
    # pyarrow reports one row per physical line (no newlines inside values), so the data rows
    # are the lines after the header minus those skipped as blank.
    candidates = np.arange(header_lines + 1, header_lines + 1 + table.num_rows + len(skipped))
    lines = np.setdiff1d(candidates, np.array(skipped, dtype=np.int64), assume_unique=True)
    columns = {name: table.column(name).combine_chunks() for name in names}
    blank = np.ones(table.num_rows, dtype=bool)
    for values in columns.values():
        blank &= pc.utf8_length(values).to_numpy(zero_copy_only=False) == 0
    if blank.any():
        keep = pa.array(~blank)
        columns = {name: values.filter(keep) for name, values in columns.items()}
        lines = lines[~blank]
    return columns, lines.astype(np.int64)


def _header_fields(data: bytes, *, path: str, delimiter: str, quoting: bool) -> list[str]:
    first = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8")
    if not first.strip():
        raise InputFormatError(
            "has no header row (the first line is empty)",
            path=path,
            line=1,
            fix="Put the column names on the first line.",
        )
    if quoting:
        return [field.strip() for field in next(csv.reader([first], delimiter=delimiter))]
    return [field.strip() for field in first.split(delimiter)]


def _to_raw_name(name: str) -> str:
    return {"user": cn.USER_RAW, "item": cn.ITEM_RAW}.get(name, name)


def _to_public_name(name: str) -> str:
    return name.removesuffix("_raw")


def _resolve_mapping(
    fmt: FileFormat, available: list[str], defaults: Mapping[str, str], *, path: str
) -> dict[str, str]:
    """``canonical -> source`` names to read: the explicit mapping, else defaults present."""
    if fmt.columns:
        mapping = {_to_raw_name(canon): source for canon, source in fmt.columns}
    else:
        mapping = {canon: source for canon, source in defaults.items() if source in available}
    for required in (cn.USER_RAW, cn.ITEM_RAW):
        mapping.setdefault(required, defaults[required])
    for canon, source in mapping.items():
        if source not in available:
            raise InputFormatError(
                f"has no column {source!r} (wanted for {_to_public_name(canon)!r}); "
                f"its columns are {available}",
                path=path,
                column=source,
                fix=f"Name the right source column with --columns {_to_public_name(canon)}=NAME.",
            )
    return mapping


def resolve_format(path: str, fmt: FileFormat) -> FileFormat:
    """Fix a format's column mapping from the header (or schema) of a source's first file.

    Each file is parsed in its own task; resolving the default mapping once, up front, makes
    every file of a multi-file source yield the same columns (or fail on a missing one).
    """
    if fmt.kind not in ("inter", "csv", "parquet") or fmt.columns:
        return fmt
    if fmt.kind == "parquet":
        try:
            available = pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as error:
            raise InputFormatError(
                f"is not a readable Parquet file ({error})",
                path=path,
                fix="Check the file, or read it with another --source kind.",
            ) from None
        defaults = _identity_defaults()
    else:
        with open(path, "rb") as handle:
            head = handle.readline()
        _check_utf8(head, path)
        if fmt.kind == "inter":
            available = _inter_field_names(head, path=path)
            defaults = _DEFAULT_INTER_FIELDS
        else:
            available = _header_fields(head, path=path, delimiter=fmt.delimiter, quoting=True)
            defaults = _identity_defaults()
    mapping = _resolve_mapping(fmt, available, defaults, path=path)
    return replace(fmt, columns=tuple((_to_public_name(c), s) for c, s in mapping.items()))


def _canonical_table(
    raw: Mapping[str, pa.Array],
    lines: np.ndarray,
    *,
    path: str,
    file_index: int,
    integer_ids: bool,
    given_split: int | None,
    source_names: Mapping[str, str],
) -> pa.Table:
    """Convert mapped raw columns (keyed by canonical name) to the canonical typed table."""
    try:
        cn.feedback_kind(raw)
    except ValueError as error:
        raise InputFormatError(
            str(error), path=path, fix="Map exactly one kind of feedback with --columns."
        ) from None
    n_rows = len(lines)
    columns: dict[str, pa.Array] = {
        cn.FILE: pa.array(np.full(n_rows, file_index, dtype=np.int32)),
        cn.LINE: pa.array(lines, type=pa.int64()),
        cn.FILE_ROW: pa.array(np.arange(n_rows, dtype=np.int64)),
    }
    for name in (cn.USER_RAW, cn.ITEM_RAW):
        columns[name] = cn.parse_id_column(
            raw[name], lines, path=path, column=source_names[name], integer=integer_ids
        )
    for name in cn.value_columns_of(raw):
        values = cn.parse_float_column(raw[name], lines, path=path, column=source_names[name])
        if name == cn.LABEL:
            cn.check_binary_labels(values, lines, path=path, column=source_names[name])
            values = pc.cast(values, pa.int8())
        elif name == cn.PLAY_TIME:
            cn.check_nonnegative(values, lines, path=path, column=source_names[name])
        elif name == cn.DURATION:
            # A zero duration has no finish rate; refuse it here rather than divide by zero.
            cn.check_nonnegative(values, lines, path=path, column=source_names[name], strictly=True)
        columns[name] = values
    if given_split is not None:
        columns[cn.GIVEN_SPLIT] = pa.array(np.full(n_rows, given_split, dtype=np.int8))
    return pa.table(columns)


def _parse_fixed(
    data: bytes, fmt: FileFormat, *, path: str, file_index: int, given_split: int | None
) -> pa.Table:
    delimiter, fixed = _FIXED_FIELDS[fmt.kind]
    names = list(fixed)
    columns, lines = _read_text_columns(
        data, path=path, names=names, delimiter=delimiter, header_lines=0, quoting=False
    )
    positions = {
        name: f"field {index + 1} ({name.removesuffix('_raw')})" for index, name in enumerate(names)
    }
    return _canonical_table(
        columns,
        lines,
        path=path,
        file_index=file_index,
        integer_ids=True,
        given_split=given_split,
        source_names=positions,
    )


def _inter_field_names(data: bytes, *, path: str) -> list[str]:
    """Field names of a RecBole atomic header (``name:type`` fields, tab-separated)."""
    header = _header_fields(data, path=path, delimiter="\t", quoting=False)
    names = []
    for position, field in enumerate(header):
        name, colon, _type = field.partition(":")
        if not colon or not name:
            raise InputFormatError(
                f"header field {position + 1} ({field!r}) is not of the form name:type",
                path=path,
                line=1,
                fix="RecBole atomic files start with a typed header, e.g. user_id:token.",
            )
        names.append(name)
    if len(set(names)) != len(names):
        raise InputFormatError(
            f"header repeats a field name: {names}",
            path=path,
            line=1,
            fix="Give every field a distinct name.",
        )
    return names


def _parse_inter(
    data: bytes, fmt: FileFormat, *, path: str, file_index: int, given_split: int | None
) -> pa.Table:
    names = _inter_field_names(data, path=path)
    text, lines = _read_text_columns(
        data, path=path, names=names, delimiter="\t", header_lines=1, quoting=False
    )
    return _mapped_table(
        text.__getitem__, lines, fmt, names, _DEFAULT_INTER_FIELDS, path, file_index, given_split
    )


def _mapped_table(
    column: Callable[[str], pa.Array],
    lines: np.ndarray,
    fmt: FileFormat,
    names: list[str],
    defaults: Mapping[str, str],
    path: str,
    file_index: int,
    given_split: int | None,
) -> pa.Table:
    """A headed file's columns (``column(name)``; raw string ids) → the canonical table, through
    the explicit mapping or the format's defaults."""
    mapping = _resolve_mapping(fmt, names, defaults, path=path)
    raw = {canon: column(source) for canon, source in mapping.items()}
    return _canonical_table(
        raw,
        lines,
        path=path,
        file_index=file_index,
        integer_ids=False,
        given_split=given_split,
        source_names=mapping,
    )


def _identity_defaults() -> dict[str, str]:
    return {cn.USER_RAW: "user", cn.ITEM_RAW: "item", **{v: v for v in cn.VALUE_COLUMNS}}


def _parse_csv(
    data: bytes, fmt: FileFormat, *, path: str, file_index: int, given_split: int | None
) -> pa.Table:
    header = _header_fields(data, path=path, delimiter=fmt.delimiter, quoting=True)
    if len(set(header)) != len(header):
        raise InputFormatError(
            f"header repeats a column name: {header}",
            path=path,
            line=1,
            fix="Give every column a distinct name.",
        )
    text, lines = _read_text_columns(
        data, path=path, names=header, delimiter=fmt.delimiter, header_lines=1, quoting=True
    )
    return _mapped_table(
        text.__getitem__, lines, fmt, header, _identity_defaults(), path, file_index, given_split
    )


def _parse_parquet(
    data: bytes, fmt: FileFormat, *, path: str, file_index: int, given_split: int | None
) -> pa.Table:
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as error:
        raise InputFormatError(
            f"is not a readable Parquet file ({error})",
            path=path,
            fix="Check the file, or read it with another --source kind.",
        ) from None
    return _mapped_table(
        lambda name: table.column(name).combine_chunks(),
        np.arange(1, table.num_rows + 1, dtype=np.int64),
        fmt,
        table.column_names,
        _identity_defaults(),
        path,
        file_index,
        given_split,
    )


FORMATS = {
    "ml1m": _parse_fixed,
    "ml100k": _parse_fixed,
    "presplit": _parse_fixed,
    "inter": _parse_inter,
    "csv": _parse_csv,
    "parquet": _parse_parquet,
}
"""File parsers by format name."""


def expected_schema(fmt: FileFormat, *, presplit: bool = False) -> pa.Schema:
    """The canonical schema :func:`parse_file` produces for a (resolved) format.

    Every file of a source parses to exactly this schema, so blocks of a Ray dataset agree.
    """
    if fmt.kind in _FIXED_FIELDS:
        mapped = list(_FIXED_FIELDS[fmt.kind][1])
    elif fmt.columns:
        mapped = [_to_raw_name(name) for name, _ in fmt.columns]
    else:
        raise ValueError(f"resolve the {fmt.kind!r} format's columns first (resolve_format)")
    fields = [
        pa.field(cn.FILE, pa.int32()),
        pa.field(cn.LINE, pa.int64()),
        pa.field(cn.FILE_ROW, pa.int64()),
        pa.field(cn.USER_RAW, pa.string()),
        pa.field(cn.ITEM_RAW, pa.string()),
    ]
    for name in cn.value_columns_of(mapped):
        fields.append(pa.field(name, pa.int8() if name == cn.LABEL else pa.float64()))
    if presplit:
        fields.append(pa.field(cn.GIVEN_SPLIT, pa.int8()))
    return pa.schema(fields)


def parse_file(
    data: bytes,
    fmt: FileFormat,
    *,
    path: str,
    file_index: int,
    given_split: int | None = None,
) -> pa.Table:
    """Parse a whole file into the canonical table (see :mod:`invlearn_ray.data.canonical`).

    Args:
        data: the file's bytes.
        fmt: its format and column mapping.
        path: named in error messages.
        file_index: position of the file in its source, stored in the ``file`` column.
        given_split: for pre-split sources, the split code of every row of this file.

    Raises:
        InputFormatError: a malformed line, a non-numeric id or value, a NaN or infinite value,
            a negative play time or duration, a missing column; the message names the file,
            line and column and says what to do.
    """
    if fmt.kind != "parquet":
        _check_utf8(data, path)
        if not data.strip():
            if fmt.kind in ("inter", "csv"):
                raise InputFormatError(
                    "is empty: not even a header row",
                    path=path,
                    fix="Point the source at a file with data.",
                )
            return _empty_canonical(fmt, file_index=file_index, given_split=given_split)
    return FORMATS[fmt.kind](data, fmt, path=path, file_index=file_index, given_split=given_split)


def _empty_canonical(fmt: FileFormat, *, file_index: int, given_split: int | None) -> pa.Table:
    names = list(_FIXED_FIELDS[fmt.kind][1])
    raw = {name: pa.array([], type=pa.string()) for name in names}
    return _canonical_table(
        raw,
        np.zeros(0, dtype=np.int64),
        path="",
        file_index=file_index,
        integer_ids=True,
        given_split=given_split,
        source_names={name: name for name in names},
    )
