"""The Ray Data build writes exactly what the in-memory build makes, and conserves rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from invlearn_ray.data import canonical as cn
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data.build import BuildConfig, build_in_memory
from invlearn_ray.data.errors import (
    EmptySplitError,
    InputFormatError,
    NoLabeledRowsError,
    SingleClassSplitError,
)
from invlearn_ray.data.labels import RatingRule
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig

pytestmark = pytest.mark.ray


def _csv_source(tmp_path: Path) -> SourceSpec:
    """Two CSV files; the second repeats some (user, item) pairs of the first."""
    rng = np.random.default_rng(0)
    for part in ("a", "b"):
        lines = ["uid,iid,stars"] + [
            f"u{rng.integers(0, 80)},i{rng.integers(0, 400)},{rng.integers(1, 6)}"
            for _ in range(700)
        ]
        (tmp_path / f"{part}.csv").write_text("\n".join(lines) + "\n")
    return SourceSpec.from_files(
        "csv",
        tmp_path / "a.csv",
        tmp_path / "b.csv",
        columns={"user": "uid", "item": "iid", "rating": "stars"},
        name="toy",
    )


def _assert_same_folders(out: Path, built) -> None:
    for name in dd.ALL_SPLITS:
        written = dd.read_split(out / name)
        expected = built.tables[name]
        key = cn.ROW if name != "unlabeled" else None
        if key:
            written, expected = written.sort_by(key), expected.sort_by(key)
        assert written.schema == expected.schema, name
        assert written.equals(expected), name


def test_ray_build_equals_in_memory_build_row_for_row(ray_session, tmp_path):
    from invlearn_ray.distributed.build import build_dataset

    config = BuildConfig(
        source=_csv_source(tmp_path),
        rule=RatingRule(4, 2),
        split=SplitOptions(seed=5, label_fraction=0.5, cold_policy="drop"),
        sampling_rate=2,
        shards=3,
    )
    manifest = build_dataset(config, tmp_path / "ray")
    built = build_in_memory(config)
    _assert_same_folders(tmp_path / "ray", built)
    assert manifest.engine == "ray"
    for key in ("counts", "cold", "conservation", "n_users", "n_items", "rule"):
        assert getattr(manifest, key) == getattr(built.manifest, key), key
    conservation = manifest.conservation
    assert conservation["holds"] and manifest.input_rows == 1400
    assert manifest.duplicates_dropped > 0 and conservation["cold_rows_dropped"] > 0
    rows = np.concatenate(
        [
            dd.read_split(tmp_path / "ray" / name, columns=[cn.ROW]).column(cn.ROW).to_numpy()
            for name in dd.OUTPUT_SPLITS
        ]
    )
    assert len(np.unique(rows)) == len(rows)
    assert len(rows) + manifest.duplicates_dropped + conservation["cold_rows_dropped"] == 1400
    assert max(manifest.files.values()) == 3
    loaded = load_dataset(tmp_path / "ray")
    assert torch.equal(
        loaded.train_test.items,
        torch.tensor(built.tables["train_test"].sort_by(cn.ROW).column(cn.ITEM).to_numpy()),
    )


def test_ray_build_of_synthetic_data_matches_and_parse_errors_surface(ray_session, tmp_path):
    from invlearn_ray.distributed.build import build_dataset

    config = BuildConfig(source=SourceSpec.from_synthetic(SyntheticConfig.preset("tiny")))
    manifest = build_dataset(config, tmp_path / "synthetic")
    _assert_same_folders(tmp_path / "synthetic", build_in_memory(config))
    assert (tmp_path / "synthetic" / dd.TRUTH_FILE).is_file()
    assert manifest.synthetic["stats"]["observed_rows"] == manifest.input_rows

    (tmp_path / "good.csv").write_text("user,item,rating\n1,2,3\n")
    (tmp_path / "bad.csv").write_text("user,item,rating\n1,2,3\n1,3,4\n2,2,lots\n")
    source = SourceSpec.from_files("csv", tmp_path / "good.csv", tmp_path / "bad.csv")
    with pytest.raises(
        InputFormatError, match=r"bad.csv:4: column 'rating': 'lots' is not a"
    ) as err:
        build_dataset(BuildConfig(source=source), tmp_path / "failed")
    assert err.value.line == 4
    assert not (tmp_path / "failed").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _presplit(folder: Path, held_out_users: range) -> SourceSpec:
    """Pre-split files: 90 training rows of users 0-9, 15 valid and 15 test rows of
    ``held_out_users`` (ratings 1-5)."""
    folder.mkdir()
    train = [(u, i) for u in range(10) for i in range(12) if (u + i) % 4]
    held_out = [(u, i) for u in held_out_users for i in range(12) if not (u + i) % 4]
    files = {"train.rating": train, "valid.rating": held_out[:15], "test.negative": held_out[15:]}
    for suffix, pairs in files.items():
        lines = [f"{user}\t{item}\t{1 + (user + 2 * item) % 5}" for user, item in pairs]
        (folder / f"toy.{suffix}").write_text("\n".join(lines) + "\n")
    return SourceSpec.presplit(folder, "toy")


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("one class", SingleClassSplitError, r"split 'valid' holds 15 rows, all labeled 1"),
        ("no labels", NoLabeledRowsError, r"labels none of the 120 rows"),
        ("all cold", EmptySplitError, r"'valid' is empty after dropping cold rows: all 15"),
    ],
)
def test_both_engines_refuse_a_degenerate_dataset_alike(
    ray_session, tmp_path, case, error, message
):
    from invlearn_ray.distributed.build import build_dataset

    rule, cold = RatingRule(3, 2), "keep"
    if case == "one class":
        rule = RatingRule(1, 0)  # every rating is >= 1: all positive
    elif case == "no labels":
        rule = RatingRule(9, 0)
    else:
        cold = "drop"
    users = range(10, 20) if case == "all cold" else range(10)
    config = BuildConfig(
        source=_presplit(tmp_path / "src", users),
        rule=rule,
        split=SplitOptions(cold_policy=cold),
    )
    with pytest.raises(error, match=message):
        build_in_memory(config)
    with pytest.raises(error, match=message):
        build_dataset(config, tmp_path / "out")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["src"]
