"""Each reader on small files written here; every bad input names its file, line and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from invlearn_ray.data import canonical as cn
from invlearn_ray.data.errors import InputFormatError
from invlearn_ray.data.readers import FileFormat, parse_file, resolve_format


def _parse(data: bytes, kind: str, path: str = "src.txt", **fmt) -> pa.Table:
    return parse_file(data, FileFormat(kind, **fmt), path=path, file_index=0)


def _csv(tmp_path: Path, text: str, **fmt) -> pa.Table:
    path = tmp_path / "data.csv"
    path.write_text(text)
    resolved = resolve_format(str(path), FileFormat("csv", **fmt))
    return parse_file(path.read_bytes(), resolved, path=str(path), file_index=2)


def test_ml1m_ratings_dat_is_read_with_lines_and_positions():
    table = _parse(b"1::1193::5::978300760\n1::661::3::978302109\n2::10::4::978300001\n", "ml1m")
    assert table.column(cn.USER_RAW).to_pylist() == ["1", "1", "2"]
    assert table.column(cn.ITEM_RAW).to_pylist() == ["1193", "661", "10"]
    assert table.column(cn.RATING).to_pylist() == [5.0, 3.0, 4.0]
    assert table.column(cn.TIMESTAMP).to_pylist()[0] == 978300760.0
    assert table.column(cn.LINE).to_pylist() == [1, 2, 3]
    assert table.column(cn.FILE_ROW).to_pylist() == [0, 1, 2]


def test_ml100k_u_data_is_tab_separated():
    table = _parse(b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n", "ml100k")
    assert table.column(cn.USER_RAW).to_pylist() == ["196", "186"]
    assert table.column(cn.RATING).to_pylist() == [3.0, 3.0]


def test_blank_lines_are_skipped_and_line_numbers_stay_physical():
    table = _parse(b"1::2::3::4\r\n\r\n   \n5::6::1::7\r\n", "ml1m")
    assert table.column(cn.LINE).to_pylist() == [1, 4]
    assert table.column(cn.USER_RAW).to_pylist() == ["1", "5"]


def test_integer_ids_are_normalized():
    table = _parse(b"007::0010::3::1\n", "ml1m")
    assert table.column(cn.USER_RAW).to_pylist() == ["7"]
    assert table.column(cn.ITEM_RAW).to_pylist() == ["10"]


def test_presplit_file_carries_its_given_split():
    table = parse_file(
        b"1\t2\t3\n4\t5\t1\n",
        FileFormat("presplit"),
        path="x.valid.rating",
        file_index=1,
        given_split=1,
    )
    assert table.column(cn.GIVEN_SPLIT).to_pylist() == [1, 1]
    assert table.column(cn.FILE).to_pylist() == [1, 1]
    assert cn.TIMESTAMP not in table.column_names


@pytest.mark.parametrize(
    ("data", "line", "fragment"),
    [
        (b"1::2::3::4\n1::2::3\n", 2, "expected 4 fields separated by '::', found 3"),
        (b"1::2::3::4\n1::2::3::4::5\n", 2, "expected 4 fields"),
        (b"1::2::3::4\nx::2::3::4\n", 2, "id 'x' is not an integer"),
        (b"1::2::3::4\n1::2.5::3::4\n", 2, "id '2.5' is not an integer"),
        (b"1::2::3::4\n\n1::2::good::4\n", 3, "'good' is not a number"),
        (b"1::2::nan::4\n", 1, "missing or NaN"),
        (b"1::2::3::4\n1::2::-inf::4\n", 2, "is infinite"),
        (b"1::::3::4\n", 1, "id is empty"),
    ],
)
def test_bad_ml1m_lines_are_reported_with_file_and_line(data, line, fragment):
    with pytest.raises(InputFormatError) as caught:
        _parse(data, "ml1m", path="ratings.dat")
    assert caught.value.path == "ratings.dat"
    assert caught.value.line == line
    assert f"ratings.dat:{line}" in str(caught.value)
    assert fragment in str(caught.value)


def test_bad_rating_names_the_field():
    with pytest.raises(InputFormatError, match=r"column 'field 3 \(rating\)'"):
        _parse(b"1\t2\tbad\t4\n", "ml100k")


def test_invalid_utf8_names_the_line():
    with pytest.raises(InputFormatError, match="src.txt:2: byte .* not valid UTF-8"):
        _parse(b"1::2::3::4\n1::\xff::3::4\n", "ml1m")


def test_empty_fixed_format_file_gives_an_empty_table():
    table = _parse(b"\n", "ml1m")
    assert table.num_rows == 0
    assert {cn.USER_RAW, cn.ITEM_RAW, cn.RATING} <= set(table.column_names)


def test_recbole_inter_reads_typed_header_and_tokens(tmp_path):
    path = tmp_path / "toy.inter"
    path.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "u1\ti9\t4\t100\nu2\ti9\t1.5\t101\n"
    )
    fmt = resolve_format(str(path), FileFormat("inter"))
    assert dict(fmt.columns) == {
        "user": "user_id",
        "item": "item_id",
        "rating": "rating",
        "timestamp": "timestamp",
    }
    table = parse_file(path.read_bytes(), fmt, path=str(path), file_index=0)
    assert table.column(cn.USER_RAW).to_pylist() == ["u1", "u2"]
    assert table.column(cn.RATING).to_pylist() == [4.0, 1.5]
    assert table.column(cn.LINE).to_pylist() == [2, 3]


def test_recbole_inter_micro_video_fields_map_by_name(tmp_path):
    path = tmp_path / "mv.inter"
    path.write_text("user_id:token\titem_id:token\tplay_time:float\tduration:float\n1\t2\t5\t10\n")
    table = parse_file(
        path.read_bytes(),
        resolve_format(str(path), FileFormat("inter")),
        path=str(path),
        file_index=0,
    )
    assert table.column(cn.PLAY_TIME).to_pylist() == [5.0]
    assert table.column(cn.DURATION).to_pylist() == [10.0]


def test_recbole_inter_without_types_is_refused(tmp_path):
    path = tmp_path / "bad.inter"
    path.write_text("user_id\titem_id:token\trating:float\n1\t2\t3\n")
    with pytest.raises(InputFormatError, match=r"bad.inter:1: header field 1 \('user_id'\)"):
        resolve_format(str(path), FileFormat("inter"))


def test_recbole_inter_missing_item_column_lists_the_columns(tmp_path):
    path = tmp_path / "noitem.inter"
    path.write_text("user_id:token\tmovie:token\trating:float\n1\t2\t3\n")
    with pytest.raises(InputFormatError) as caught:
        resolve_format(str(path), FileFormat("inter"))
    message = str(caught.value)
    assert "no column 'item_id'" in message and "['user_id', 'movie', 'rating']" in message
    assert "--columns item=NAME" in message


def test_csv_with_column_mapping_and_quoted_fields(tmp_path):
    table = _csv(
        tmp_path,
        'uid,iid,score,note\n"alice",10,4,"x, y"\nbob,11,2,z\n',
        columns=(("user", "uid"), ("item", "iid"), ("rating", "score")),
    )
    assert table.column(cn.USER_RAW).to_pylist() == ["alice", "bob"]
    assert table.column(cn.ITEM_RAW).to_pylist() == ["10", "11"]
    assert table.column(cn.RATING).to_pylist() == [4.0, 2.0]
    assert table.column(cn.FILE).to_pylist() == [2, 2]
    assert "note" not in table.column_names


def test_csv_default_mapping_uses_canonical_header_names(tmp_path):
    table = _csv(tmp_path, "user;item;label\n1;2;1\n1;3;0\n", delimiter=";")
    assert table.column(cn.LABEL).to_pylist() == [1, 0]
    assert table.column(cn.LABEL).type == pa.int8()


def test_csv_missing_mapped_column_is_reported(tmp_path):
    with pytest.raises(InputFormatError, match="no column 'stars'"):
        _csv(tmp_path, "user,item,rating\n1,2,3\n", columns=(("rating", "stars"),))


def test_csv_with_two_kinds_of_feedback_is_refused(tmp_path):
    with pytest.raises(InputFormatError, match="exactly one kind of feedback"):
        _csv(tmp_path, "user,item,rating,label\n1,2,3,1\n")


def test_csv_without_feedback_is_refused(tmp_path):
    with pytest.raises(InputFormatError, match="exactly one kind of feedback"):
        _csv(tmp_path, "user,item\n1,2\n")


def test_csv_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(InputFormatError, match="empty.csv: is empty"):
        parse_file(b"", FileFormat("csv"), path=str(path), file_index=0)


def test_csv_non_binary_label_is_refused(tmp_path):
    with pytest.raises(InputFormatError, match=r"data.csv:3: column 'label': label 2.0 is neither"):
        _csv(tmp_path, "user,item,label\n1,2,1\n1,3,2\n")


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("1,2,-1,10", "column 'play_time': value -1.0 is not zero or more"),
        ("1,2,5,-3", "column 'duration': value -3.0 is not positive"),
        ("1,2,5,0", "column 'duration': value 0.0 is not positive"),
    ],
)
def test_negative_play_time_or_duration_is_refused(tmp_path, row, fragment):
    with pytest.raises(InputFormatError, match=fragment) as caught:
        _csv(tmp_path, f"user,item,play_time,duration\n1,1,3,10\n{row}\n")
    assert caught.value.line == 3


def test_parquet_with_mapping_numbers_rows(tmp_path):
    path = tmp_path / "part.parquet"
    pq.write_table(
        pa.table({"u": [10, 20], "i": ["a", "b"], "pt": [1.0, 9.0], "dur": [10.0, 10.0]}), path
    )
    fmt = resolve_format(
        str(path),
        FileFormat(
            "parquet",
            columns=(("user", "u"), ("item", "i"), ("play_time", "pt"), ("duration", "dur")),
        ),
    )
    table = parse_file(path.read_bytes(), fmt, path=str(path), file_index=0)
    assert table.column(cn.USER_RAW).to_pylist() == ["10", "20"]
    assert table.column(cn.LINE).to_pylist() == [1, 2]


def test_parquet_nan_rating_names_the_row(tmp_path):
    path = tmp_path / "nan.parquet"
    pq.write_table(
        pa.table({"user": [1, 2, 3], "item": [1, 1, 1], "rating": [1.0, 2.0, np.nan]}), path
    )
    with pytest.raises(InputFormatError, match=r"nan.parquet:3: column 'rating': value is missing"):
        parse_file(path.read_bytes(), FileFormat("parquet"), path=str(path), file_index=0)


def test_parquet_null_id_is_refused(tmp_path):
    path = tmp_path / "null.parquet"
    pq.write_table(pa.table({"user": [1, None], "item": [1, 1], "rating": [1.0, 2.0]}), path)
    with pytest.raises(InputFormatError, match=r"null.parquet:2: column 'user': id is missing"):
        parse_file(path.read_bytes(), FileFormat("parquet"), path=str(path), file_index=0)


def test_unknown_format_and_mapping_names_are_refused():
    with pytest.raises(ValueError, match="unknown file format 'xlsx'"):
        FileFormat("xlsx")
    with pytest.raises(ValueError, match=r"unknown canonical columns \['score'\]"):
        FileFormat("csv", columns=(("score", "s"),))
    with pytest.raises(ValueError, match="fixed columns"):
        FileFormat("ml1m", columns=(("user", "u"),))
