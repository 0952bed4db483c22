"""The canonical interaction table every reader produces, and the steps that index it.

One table shape for every source (MovieLens files, RecBole atomic files, pre-split files, CSV,
Parquet, the synthetic generator) lets one set of pure transforms — labeling, de-duplication,
splitting — serve them all, in memory or as Ray Data ``map_batches`` steps.

Columns of a parsed table (pyarrow):

* ``file`` (int32): index of the source file in the source's path list;
* ``line`` (int64): 1-based line (text) or row (Parquet) number, so errors can point at it;
* ``file_row`` (int64): 0-based index of the row among its file's data rows;
* ``user_raw``, ``item_raw`` (string): ids as written in the source;
* value columns, float64 unless noted: ``rating``; ``label`` (int8, 0/1); ``play_time`` and
  ``duration``; optional ``timestamp``;
* ``given_split`` (int8, pre-split sources only) and ``true_label`` (int8, synthetic only).

``add_row_index`` then gives each row its global position ``row`` in the concatenated input —
the order "keep last" de-duplication follows and the id every output row keeps, so counts can be
reconciled row by row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from invlearn_ray.data.errors import InputFormatError

FILE = "file"
LINE = "line"
FILE_ROW = "file_row"
ROW = "row"
USER_RAW = "user_raw"
ITEM_RAW = "item_raw"
USER = "user"
ITEM = "item"
RATING = "rating"
LABEL = "label"
PLAY_TIME = "play_time"
DURATION = "duration"
TIMESTAMP = "timestamp"
GIVEN_SPLIT = "given_split"
TRUE_LABEL = "true_label"

VALUE_COLUMNS = (RATING, LABEL, PLAY_TIME, DURATION, TIMESTAMP)
"""Canonical feedback columns a reader may map source columns onto."""

FEEDBACK_KINDS = {
    "rating": (RATING,),
    "label": (LABEL,),
    "micro_video": (PLAY_TIME, DURATION),
}
"""Which value columns make up each kind of feedback."""

GIVEN_SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
"""Codes of ``given_split`` for sources that arrive already split."""


def feedback_kind(columns: Iterable[str]) -> str:
    """Name the kind of feedback a canonical table carries.

    Raises:
        ValueError: when no kind's columns are all present, or more than one kind is.
    """
    present = set(columns)
    kinds = [kind for kind, needed in FEEDBACK_KINDS.items() if set(needed) <= present]
    if len(kinds) != 1:
        raise ValueError(
            f"a source must carry exactly one kind of feedback out of "
            f"{ {kind: list(cols) for kind, cols in FEEDBACK_KINDS.items()} }; "
            f"found columns {sorted(present & set(VALUE_COLUMNS))}"
        )
    return kinds[0]


def value_columns_of(columns: Iterable[str]) -> list[str]:
    """The feedback and timestamp columns present, in canonical order."""
    present = set(columns)
    return [name for name in VALUE_COLUMNS if name in present]


def first_failure(mask: np.ndarray) -> int | None:
    """Index of the first False in a boolean array, or None when all are True."""
    bad = np.flatnonzero(~mask)
    return int(bad[0]) if len(bad) else None


def require_rows(
    ok: np.ndarray,
    lines: np.ndarray,
    problem: Callable[[int], str],
    *,
    path: str,
    column: str,
    fix: str,
) -> None:
    """Raise :class:`InputFormatError` at the first row where ``ok`` is False, if any.

    ``problem(row)`` words the error for that row (e.g. quoting its value).
    """
    bad = first_failure(ok)
    if bad is not None:
        raise InputFormatError(
            problem(bad), path=path, line=int(lines[bad]), column=column, fix=fix
        )


def parse_float_column(values: pa.Array, lines: np.ndarray, *, path: str, column: str) -> pa.Array:
    """Convert text values to float64, refusing non-numbers, NaN and infinities.

    Args:
        values: string array (one value per data row).
        lines: the 1-based line number of each row, for error messages.
        path: source file named in errors.
        column: source column named in errors.

    Raises:
        InputFormatError: naming the first bad value's line.
    """
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        text = pc.utf8_trim_whitespace(values)
        try:
            numbers = pc.cast(text, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            numbers = None
        if numbers is None:
            for index, raw in enumerate(text.to_pylist()):
                try:
                    float(raw)
                except (TypeError, ValueError):
                    raise InputFormatError(
                        f"{raw!r} is not a number",
                        path=path,
                        line=int(lines[index]),
                        column=column,
                        fix="Correct or remove that line.",
                    ) from None
            raise AssertionError("pyarrow refused a column that Python parses")  # pragma: no cover
    else:
        try:
            numbers = pc.cast(values, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InputFormatError(
                f"has type {values.type}, not a number type",
                path=path,
                column=column,
                fix="Map a numeric column onto it.",
            ) from None
    array = numbers.to_numpy(zero_copy_only=False)
    present = ~np.isnan(array) & numbers.is_valid().to_numpy(zero_copy_only=False)
    where = {"path": path, "column": column}
    require_rows(
        present,
        lines,
        lambda row: "value is missing or NaN",
        fix="Fill in a number or remove that line.",
        **where,
    )
    require_rows(
        np.isfinite(array),
        lines,
        lambda row: f"value {array[row]} is infinite",
        fix="Fill in a finite number or remove that line.",
        **where,
    )
    return pa.array(array, type=pa.float64())


def parse_id_column(
    values: pa.Array, lines: np.ndarray, *, path: str, column: str, integer: bool
) -> pa.Array:
    """Normalize raw ids to non-empty strings (canonical decimal text when ``integer``).

    Formats whose ids are integers by definition (MovieLens, the paper's pre-split files) pass
    ``integer=True``: ``"007"`` and ``"7"`` are then the same id, and a non-integer is an error.
    Token formats (RecBole ``:token``, CSV, Parquet) accept any non-empty text.

    Raises:
        InputFormatError: naming the first empty or non-integer id's line.
    """
    if pa.types.is_integer(values.type):
        require_rows(
            values.is_valid().to_numpy(zero_copy_only=False),
            lines,
            lambda row: "id is missing",
            path=path,
            column=column,
            fix="Fill in the id or remove that row.",
        )
        return pc.cast(values, pa.string())
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise InputFormatError(
            f"has type {values.type}; ids must be integers or strings",
            path=path,
            column=column,
            fix="Map an integer or string column onto it.",
        )
    text = pc.utf8_trim_whitespace(pc.cast(values, pa.string()))
    require_rows(
        pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False) > 0,
        lines,
        lambda row: "id is empty",
        path=path,
        column=column,
        fix="Fill in the id or remove that line.",
    )
    if not integer:
        return text
    is_integer = pc.match_substring_regex(text, r"^[+-]?[0-9]+$").to_numpy(zero_copy_only=False)
    require_rows(
        is_integer,
        lines,
        lambda row: f"id {text[row].as_py()!r} is not an integer, as this format requires",
        path=path,
        column=column,
        fix="Correct that line, or read the file as CSV if its ids are tokens.",
    )
    return pc.cast(pc.cast(text, pa.int64()), pa.string())


def check_nonnegative(
    values: pa.Array, lines: np.ndarray, *, path: str, column: str, strictly: bool = False
) -> None:
    """Refuse negative (or, with ``strictly``, zero) values, naming the first bad line."""
    array = values.to_numpy(zero_copy_only=False)
    ok = array > 0 if strictly else array >= 0
    bound = "positive" if strictly else "zero or more"
    require_rows(
        ok,
        lines,
        lambda row: f"value {array[row]} is not {bound}",
        path=path,
        column=column,
        fix=f"A {column} must be {bound}; correct or remove that line.",
    )


def check_binary_labels(values: pa.Array, lines: np.ndarray, *, path: str, column: str) -> None:
    """Refuse labels other than 0 and 1, naming the first bad line."""
    array = values.to_numpy(zero_copy_only=False)
    require_rows(
        (array == 0) | (array == 1),
        lines,
        lambda row: f"label {array[row]} is neither 0 nor 1",
        path=path,
        column=column,
        fix="Labels must be 0 or 1; rows without a reliable label belong in a rating or "
        "play-time source whose rule marks them unclear.",
    )


def file_offsets(rows_per_file: Mapping[int, int], n_files: int) -> np.ndarray:
    """Global row index of each file's first row, files concatenated in path order."""
    counts = np.array([rows_per_file.get(index, 0) for index in range(n_files)], dtype=np.int64)
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def add_row_index(table: pa.Table, offsets: np.ndarray) -> pa.Table:
    """Add ``row`` = file offset + ``file_row`` and drop the per-file position columns."""
    files = table.column(FILE).to_numpy()
    rows = offsets[files] + table.column(FILE_ROW).to_numpy()
    table = table.drop_columns([FILE, LINE, FILE_ROW])
    return table.add_column(0, ROW, pa.array(rows, type=pa.int64()))


def build_id_map(raw_ids: Iterable[str] | pa.Array) -> pa.Array:
    """Sorted distinct raw ids; an id's position in the result is its contiguous index.

    Ids that all look like integers are sorted numerically (MovieLens user "2" gets index 1,
    before "10"), others as text. Sorting, not first appearance, makes the map independent of
    the order in which a distributed reader delivers rows.
    """
    if isinstance(raw_ids, pa.Array | pa.ChunkedArray):
        values = pc.cast(raw_ids, pa.string())
    else:
        values = pa.array(list(raw_ids), type=pa.string())
    distinct = pc.unique(values).drop_null()
    numeric = len(distinct) > 0 and bool(
        pc.all(pc.match_substring_regex(distinct, r"^[+-]?[0-9]{1,18}$")).as_py()
    )
    if numeric:
        order = pc.sort_indices(pc.cast(distinct, pa.int64()))
    else:
        order = pc.sort_indices(distinct)
    return distinct.take(order)


def id_map_table(id_map: pa.Array) -> pa.Table:
    """The saved form of an id map: ``raw_id`` (string) and ``index`` (int64)."""
    return pa.table({"raw_id": id_map, "index": pa.array(np.arange(len(id_map), dtype=np.int64))})


def apply_id_maps(table: pa.Table, user_map: pa.Array, item_map: pa.Array) -> pa.Table:
    """Replace ``user_raw``/``item_raw`` by contiguous int64 ``user``/``item`` indices.

    Raises:
        ValueError: if a raw id is missing from its map (the map was built from other data).
    """
    mapped = {}
    for raw_name, name, id_map in ((USER_RAW, USER, user_map), (ITEM_RAW, ITEM, item_map)):
        index = pc.index_in(table.column(raw_name), value_set=id_map)
        if index.null_count:
            missing = table.column(raw_name).filter(pc.is_null(index))[0].as_py()
            raise ValueError(f"{raw_name} {missing!r} is not in the id map built for this data")
        mapped[name] = pc.cast(index, pa.int64())
    position = table.schema.get_field_index(USER_RAW)
    table = table.drop_columns([USER_RAW, ITEM_RAW])
    table = table.add_column(position, USER, mapped[USER])
    return table.add_column(position + 1, ITEM, mapped[ITEM])
