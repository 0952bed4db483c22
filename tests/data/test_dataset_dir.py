"""A built dataset is verified when loaded: an edited manifest or a changed shard is a one-line
error naming the split and the file, never a silently different model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data.errors import DatasetFormatError
from invlearn_ray.data.loading import load_dataset, load_unlabeled_draw
from invlearn_ray.data.manifest import Manifest

SHARD = "part-00000-of-00001.parquet"


@pytest.fixture
def dataset(tiny_dataset, tmp_path) -> Path:
    """A private copy of the shared tiny dataset, free to damage."""
    return Path(shutil.copytree(tiny_dataset, tmp_path / "tiny"))


def _edit_manifest(dataset: Path, edit) -> None:
    path = dataset / dd.MANIFEST_FILE
    values = json.loads(path.read_text())
    edit(values)
    path.write_text(json.dumps(values))


def _load_error(dataset: Path, **options) -> str:
    with pytest.raises(DatasetFormatError) as raised:
        load_dataset(dataset, **options)
    message = str(raised.value)
    assert "\n" not in message and "Rebuild the dataset with pipelines/build_data.py" in message
    return message


def test_an_intact_dataset_loads_and_every_file_is_recorded(dataset):
    manifest = Manifest.read(dataset)
    assert set(manifest.shard_files) == set(dd.FINGERPRINTED)
    for split in dd.ALL_SPLITS:
        assert sum(record.rows for record in manifest.shard_files[split]) == manifest.rows(split)
    dd.verify_dataset(dataset, manifest, full_hash=True)
    assert load_dataset(dataset).n_items == manifest.n_items


def test_an_edited_item_count_is_refused(dataset):
    n_items = Manifest.read(dataset).n_items
    _edit_manifest(dataset, lambda values: values.update(n_items=5000))
    message = _load_error(dataset)
    assert message.startswith(f"{dataset / 'manifest.json'}: n_items is 5000, but ")
    assert f"id_map/items.parquet maps {n_items} items" in message


def test_an_edited_split_count_is_refused(dataset):
    rows = Manifest.read(dataset).rows("valid")
    _edit_manifest(dataset, lambda values: values["counts"]["valid"].update(rows=rows + 1))
    message = _load_error(dataset)
    assert f"split 'valid': the manifest counts {rows + 1} rows, but its files" in message
    assert f"hold {rows}" in message


def test_a_test_shard_replaced_by_the_valid_shard_is_refused(dataset):
    shutil.copyfile(dataset / "valid" / SHARD, dataset / "test" / SHARD)
    message = _load_error(dataset)
    assert message.startswith(f"{dataset / 'test' / SHARD}: split 'test': ")


def test_a_truncated_shard_is_a_format_error_not_an_arrow_traceback(dataset):
    shard = dataset / "train_train" / SHARD
    shard.write_bytes(shard.read_bytes()[:-100])
    message = _load_error(dataset)
    assert message.startswith(f"{shard}: split 'train_train': ")
    assert "bytes, but the build wrote" in message


def test_a_file_the_build_did_not_write_is_refused(dataset):
    shutil.copyfile(dataset / "valid" / SHARD, dataset / "valid" / "part-extra.parquet")
    assert "part-extra.parquet: split 'valid': a file the build did not write" in _load_error(
        dataset
    )


def test_only_the_full_hash_sees_a_change_inside_a_data_page(dataset):
    shard = dataset / "unclear" / SHARD
    content = bytearray(shard.read_bytes())
    content[len(content) // 3] ^= 0xFF  # same size, footer untouched
    shard.write_bytes(bytes(content))
    dd.verify_dataset(dataset, Manifest.read(dataset))
    message = _load_error(dataset, full_hash=True)
    assert message.startswith(f"{shard}: split 'unclear': its content differs")


def test_the_unlabeled_draw_is_verified_too(dataset):
    shard = dataset / "unlabeled" / SHARD
    shard.write_bytes(shard.read_bytes()[:50])
    with pytest.raises(DatasetFormatError, match=r"split 'unlabeled': \d+ bytes, but the build"):
        load_unlabeled_draw(dataset)


def test_an_unreadable_shard_is_a_format_error(tmp_path):
    (tmp_path / "valid").mkdir()
    (tmp_path / "valid" / SHARD).write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DatasetFormatError, match=r"split 'valid': not readable as Parquet"):
        dd.read_split(tmp_path / "valid")
