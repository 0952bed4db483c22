"""The in-memory build end to end: conservation, policies, writing, loading, bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from invlearn_ray.data import canonical as cn
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data.build import (
    BuildConfig,
    build_dataset_in_memory,
    build_in_memory,
)
from invlearn_ray.data.errors import (
    DataError,
    DatasetFormatError,
    EmptyInputError,
    EmptySplitError,
    InputFormatError,
    OutputDirectoryError,
)
from invlearn_ray.data.labels import FinishRateRule, PlaytimeQuartileRule, RatingRule
from invlearn_ray.data.loading import load_dataset, load_unlabeled_draw
from invlearn_ray.data.manifest import SCHEMA_VERSION
from invlearn_ray.data.sampling import epoch_generator, sample_unlabeled
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig


def _ratings_file(tmp_path: Path, n_users: int = 60, n_items: int = 50, seed: int = 0) -> Path:
    """An ML-1M style file with ~1000 rows, some duplicated (user, item) pairs."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1, n_users + 1, 1000)
    items = rng.integers(1, n_items + 1, 1000)
    ratings = rng.integers(1, 6, 1000)
    lines = [
        f"{u}::{i}::{r}::{1000 + k}"
        for k, (u, i, r) in enumerate(zip(users, items, ratings, strict=True))
    ]
    path = tmp_path / "ratings.dat"
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(path: Path, **kwargs) -> BuildConfig:
    return BuildConfig(source=SourceSpec.from_files("ml1m", path), **kwargs)


def _all_rows(built) -> np.ndarray:
    return np.concatenate(
        [built.tables[name].column(cn.ROW).to_numpy() for name in dd.OUTPUT_SPLITS]
    )


def test_every_input_row_is_written_once_or_counted_as_dropped(tmp_path):
    path = _ratings_file(tmp_path)
    built = build_in_memory(_config(path, rule=RatingRule(4, 2), split=SplitOptions(seed=1)))
    written = _all_rows(built)
    assert len(written) == len(np.unique(written))
    manifest = built.manifest
    assert manifest.input_rows == 1000
    assert len(written) + manifest.duplicates_dropped == 1000
    assert manifest.duplicates_dropped > 0
    assert manifest.conservation["holds"]
    for name in dd.OUTPUT_SPLITS:
        assert manifest.rows(name) == built.tables[name].num_rows
    unclear = built.tables["unclear"]
    assert (unclear.column("hidden_label").to_numpy() == -1).all()
    assert set(unclear.column(cn.RATING).to_pylist()) == {3.0}


def test_duplicates_keep_the_last_line(tmp_path):
    path = tmp_path / "dup.dat"
    # Both labels in every split; (1, 1) is rated 5 first.
    rows = [
        f"{u}::{i}::{5 if (u + i) % 2 == 0 else 1}::1" for u in range(1, 11) for i in range(1, 11)
    ]
    rows.append("1::1::1::2")  # later rating of an earlier pair: this one must win
    path.write_text("\n".join(rows) + "\n")
    built = build_in_memory(_config(path))
    assert built.manifest.duplicates_dropped == 1
    for name in dd.LABELED_SPLITS:
        table = built.tables[name]
        first = (table.column(cn.USER).to_numpy() == 0) & (table.column(cn.ITEM).to_numpy() == 0)
        if first.any():
            assert table.column(cn.ROW).to_numpy()[first].tolist() == [100]
            assert table.column(cn.LABEL).to_numpy()[first].tolist() == [0]


def test_cold_rows_are_flagged_or_dropped_and_still_conserved(tmp_path):
    path = _ratings_file(tmp_path, n_users=300, n_items=400)
    kept = build_in_memory(_config(path, split=SplitOptions(seed=2, cold_policy="keep")))
    dropped = build_in_memory(_config(path, split=SplitOptions(seed=2, cold_policy="drop")))
    cold_valid = kept.manifest.cold["valid"]["rows"]
    assert cold_valid > 0
    assert kept.tables["valid"].column("cold").to_numpy(zero_copy_only=False).sum() == cold_valid
    assert dropped.manifest.cold["valid"]["dropped"] == cold_valid
    assert dropped.tables["valid"].num_rows == kept.tables["valid"].num_rows - cold_valid
    assert not dropped.tables["test"].column("cold").to_numpy(zero_copy_only=False).any()
    assert dropped.manifest.conservation["holds"]
    assert len(_all_rows(dropped)) + dropped.manifest.conservation["cold_rows_dropped"] == len(
        _all_rows(kept)
    )


def test_presplit_files_keep_their_splits(tmp_path):
    rng = np.random.default_rng(5)
    for part, n in (("train.rating", 300), ("valid.rating", 100), ("test.negative", 100)):
        lines = [
            f"{rng.integers(1, 20)}\t{rng.integers(1, 30)}\t{rng.integers(1, 6)}" for _ in range(n)
        ]
        (tmp_path / f"toy.{part}").write_text("\n".join(lines) + "\n")
    built = build_in_memory(BuildConfig(source=SourceSpec.presplit(tmp_path, "toy")))
    valid_rows = built.tables["valid"].column(cn.ROW).to_numpy()
    test_rows = built.tables["test"].column(cn.ROW).to_numpy()
    assert valid_rows.min() >= 300 and valid_rows.max() < 400
    assert test_rows.min() >= 400
    assert built.manifest.split["kind"] == "given"
    assert built.manifest.conservation["holds"]


def test_micro_video_csv_with_quartile_rule(tmp_path):
    rng = np.random.default_rng(1)
    lines = ["uid,vid,pt,dur"] + [
        f"u{rng.integers(0, 40)},v{rng.integers(0, 60)},{rng.uniform(0, 30):.2f},30"
        for _ in range(800)
    ]
    path = tmp_path / "mv.csv"
    path.write_text("\n".join(lines) + "\n")
    spec = SourceSpec.from_files(
        "csv", path, columns={"user": "uid", "item": "vid", "play_time": "pt", "duration": "dur"}
    )
    built = build_in_memory(BuildConfig(source=spec, rule=PlaytimeQuartileRule()))
    rule = built.manifest.rule
    assert rule["kind"] == "playtime-quartile" and rule["lower_value"] < rule["upper_value"]
    unclear_share = built.manifest.rows("unclear") / (800 - built.manifest.duplicates_dropped)
    assert unclear_share == pytest.approx(0.5, abs=0.05)
    assert built.manifest.feedback == "micro_video"
    assert "play_time" in built.tables["test"].column_names


def test_label_fraction_hides_labels_and_blanks_their_values(tmp_path):
    path = _ratings_file(tmp_path)
    full = build_in_memory(_config(path, split=SplitOptions(seed=3)))
    sparse = build_in_memory(_config(path, split=SplitOptions(seed=3, label_fraction=0.5)))
    unclear = sparse.tables["unclear"]
    hidden = np.array(unclear.column("origin").to_pylist()) == "label_fraction"
    n_training = full.tables["train_train"].num_rows + full.tables["train_test"].num_rows
    n_kept = sparse.tables["train_train"].num_rows + sparse.tables["train_test"].num_rows
    assert n_kept + hidden.sum() == n_training
    assert set(unclear.column("hidden_label").to_numpy()[hidden]) <= {0, 1}
    assert unclear.column(cn.RATING).null_count == hidden.sum()


def test_bad_inputs_stop_the_build_with_a_clear_error(tmp_path):
    blank = tmp_path / "blank.dat"
    blank.write_text("\n\n")
    with pytest.raises(EmptyInputError, match="blank.dat: the source holds no data rows"):
        build_in_memory(_config(blank))
    tiny = tmp_path / "tiny.dat"
    tiny.write_text("1::1::5::1\n1::2::5::1\n2::1::1::1\n")
    with pytest.raises(EmptySplitError, match="would be empty"):
        build_in_memory(_config(tiny))
    bad = tmp_path / "bad.dat"
    bad.write_text("1::1::5::1\n1::2::five::1\n")
    with pytest.raises(InputFormatError, match=r"bad.dat:2: column 'field 3 \(rating\)'"):
        build_in_memory(_config(bad))
    with pytest.raises(ValueError, match="'finish-rate' needs micro_video feedback"):
        build_in_memory(_config(_ratings_file(tmp_path), rule=FinishRateRule()))
    with pytest.raises(DataError, match="missing.dat: no such file"):
        SourceSpec.from_files("ml1m", tmp_path / "missing.dat")


def test_written_dataset_loads_back_to_the_same_tensors(tmp_path):
    config = BuildConfig(
        source=SourceSpec.from_synthetic(SyntheticConfig.preset("tiny")),
        shards=3,
        sampling_rate=2,
    )
    built = build_in_memory(config)
    manifest = build_dataset_in_memory(config, tmp_path / "ds")
    assert manifest.counts == built.manifest.counts
    data = load_dataset(tmp_path / "ds")
    train = built.tables["train_train"].sort_by(cn.ROW)
    assert torch.equal(data.train_train.users, torch.tensor(train.column(cn.USER).to_numpy()))
    assert len(list((tmp_path / "ds" / "train_train").glob("*.parquet"))) == 3
    assert pq.read_table(tmp_path / "ds" / "id_map" / "users.parquet").num_rows == data.n_users
    assert data.truth is not None
    users = torch.arange(data.n_users).repeat_interleave(data.n_items)
    items = torch.arange(data.n_items).repeat(data.n_users)
    assert torch.equal(data.truth(users, items), built.truth(users, items))


def test_stored_unlabeled_draw_is_the_epoch_zero_draw_of_the_loaded_data(tmp_path):
    config = _config(_ratings_file(tmp_path), sampling_rate=3, split=SplitOptions(seed=11))
    build_dataset_in_memory(config, tmp_path / "ds")
    data = load_dataset(tmp_path / "ds")
    users, items, source_rows = load_unlabeled_draw(tmp_path / "ds")
    training = data.labeled_training()
    expected = sample_unlabeled(training.users, data.seen_in_training, 3, epoch_generator(11, 0))
    assert torch.equal(users, training.users.repeat_interleave(3))
    assert torch.equal(items, expected.flatten())
    assert not data.seen_in_training.contains(users, items).any()
    assert len(source_rows) == 3 * len(training)


def test_output_folder_policy(tmp_path):
    path = _ratings_file(tmp_path)
    out = tmp_path / "ds"
    first = build_dataset_in_memory(_config(path), out)
    again = build_dataset_in_memory(_config(path), out)  # same inputs: rebuilt in place
    assert again.counts == first.counts
    with pytest.raises(OutputDirectoryError, match="already holds a different dataset"):
        build_dataset_in_memory(_config(path, split=SplitOptions(seed=9)), out)
    replaced = build_dataset_in_memory(
        _config(path, split=SplitOptions(seed=9)), out, overwrite=True
    )
    assert json.loads((out / "manifest.json").read_text())["seed"] == replaced.seed == 9
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputDirectoryError, match="holds no manifest.json"):
        build_dataset_in_memory(_config(path), foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_loading_refuses_what_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetFormatError, match="no such dataset folder"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetFormatError, match="not a built dataset"):
        load_dataset(tmp_path)
    out = tmp_path / "ds"
    build_dataset_in_memory(_config(_ratings_file(tmp_path)), out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetFormatError, match="schema_version 99, but this code reads"):
        load_dataset(out)
    manifest["schema_version"] = SCHEMA_VERSION
    (out / "manifest.json").write_text(json.dumps(manifest))
    for shard in (out / "valid").glob("*.parquet"):
        shard.unlink()
    with pytest.raises(DatasetFormatError, match="valid: missing or empty split folder"):
        load_dataset(out)


@pytest.mark.ml100k
def test_ml100k_inter_builds_with_its_published_counts(ml100k_dir, tmp_path):
    spec = SourceSpec.from_files("inter", ml100k_dir / "ml-100k.inter", name="ml100k")
    manifest = build_dataset_in_memory(BuildConfig(source=spec), tmp_path / "ml100k")
    assert (manifest.input_rows, manifest.n_users, manifest.n_items) == (100000, 943, 1682)
    assert manifest.duplicates_dropped == 0
    counts = manifest.counts
    assert [counts[s]["rows"] for s in dd.LABELED_SPLITS] == [54000, 6000, 20000, 20000]
    assert counts["unclear"]["rows"] == 0
    data = load_dataset(tmp_path / "ml100k")
    positive_share = float(data.test.labels.mean())
    assert 0.8 < positive_share < 0.86  # ratings >= 3 are ~83% of ML-100K


@pytest.mark.ml100k
def test_ml100k_presplit_files_keep_their_sizes(ml100k_dir):
    built = build_in_memory(BuildConfig(source=SourceSpec.presplit(ml100k_dir / "split", "ml100k")))
    counts = built.manifest.counts
    assert counts["train_train"]["rows"] + counts["train_test"]["rows"] == 60000
    assert (counts["valid"]["rows"], counts["test"]["rows"]) == (20000, 20000)
    assert (built.manifest.n_users, built.manifest.n_items) == (943, 1682)


def test_a_training_split_of_one_class_is_built_with_a_warning_and_its_counts(tmp_path, caplog):
    # Positive-only training rows (implicit feedback) with validation and test of both labels.
    folder = tmp_path / "split"
    folder.mkdir()
    train = [f"{u}\t{i}\t5" for u in range(10) for i in range(12) if (u + i) % 4]
    held_out = [f"{u}\t{i}\t{1 + u % 5}" for u in range(10) for i in range(12) if not (u + i) % 4]
    files = {"train.rating": train, "valid.rating": held_out[:15], "test.negative": held_out[15:]}
    for suffix, lines in files.items():
        (folder / f"toy.{suffix}").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="invlearn_ray.data.build"):
        built = build_in_memory(BuildConfig(source=SourceSpec.presplit(folder, "toy")))
    assert built.manifest.counts["train_train"] == {"rows": 81, "label_0": 0, "label_1": 81}
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "dataset 'toy': split 'train_train' holds 81 rows, all labeled 1 (label 1: 81, label 0: 0)"
    )
    assert "split 'train_test' holds 9 rows" in warnings[1]
