"""A dataset built to an object store (a real S3 server) is the dataset a local build makes,
committed manifest-last: never half-visible, replaced whole, verified when loaded."""

from __future__ import annotations

import uuid

import pytest
from support.datasets import assert_same_data

from invlearn_ray import storage
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory
from invlearn_ray.data.errors import DatasetFormatError, OutputDirectoryError
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.data.sources import SourceSpec
from invlearn_ray.data.splits import SplitOptions
from invlearn_ray.data.synthetic import SyntheticConfig

SHARD = "part-00000-of-00001.parquet"


def _tiny(seed: int = 0) -> BuildConfig:
    """The configuration of the session's local ``tiny_dataset`` (seed 0)."""
    source = SourceSpec.from_synthetic(SyntheticConfig.preset("tiny"))
    return BuildConfig(source=source, split=SplitOptions(seed=seed))


@pytest.fixture
def dataset_uri(s3_env) -> str:
    """``s3://<a new bucket>/ds``: nothing there yet."""
    return storage.join(s3_env.create_bucket(f"data-{uuid.uuid4().hex[:8]}"), "ds")


def test_a_memory_build_to_s3_loads_equal_to_the_local_build(dataset_uri, tiny_dataset):
    build_dataset_in_memory(_tiny(), dataset_uri)
    assert storage.list_files(dataset_uri) == [dd.MANIFEST_FILE, dd.TRUTH_FILE]  # no marker
    assert_same_data(load_dataset(dataset_uri, full_hash=True), load_dataset(tiny_dataset))

    build_dataset_in_memory(_tiny(), dataset_uri)  # same inputs: rebuilt in place
    with pytest.raises(OutputDirectoryError, match=r"already holds a different dataset"):
        build_dataset_in_memory(_tiny(seed=1), dataset_uri)
    build_dataset_in_memory(_tiny(seed=1), dataset_uri, overwrite=True)
    assert load_dataset(dataset_uri).manifest.seed == 1


def test_an_interrupted_build_is_not_a_dataset_and_the_next_build_replaces_it(dataset_uri):
    storage.begin_write(dataset_uri, dd.MANIFEST_FILE)
    storage.write_bytes(storage.join(dataset_uri, "valid", "stray.parquet"), b"half a file")
    with pytest.raises(DatasetFormatError, match=r"ds: not a built dataset \(no manifest.json\)"):
        load_dataset(dataset_uri)
    build_dataset_in_memory(_tiny(), dataset_uri)
    assert storage.list_files(storage.join(dataset_uri, "valid")) == [SHARD]
    load_dataset(dataset_uri)


def test_a_failed_build_leaves_nothing_behind(dataset_uri, monkeypatch):
    def fail(directory):
        raise RuntimeError("disk full")

    monkeypatch.setattr(dd, "fingerprint_files", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        build_dataset_in_memory(_tiny(), dataset_uri)
    # No file left (SeaweedFS may keep the empty folder entry a while; S3 proper has none).
    assert storage.list_files(dataset_uri, recursive=True) == []


def test_a_folder_of_other_files_is_never_overwritten(dataset_uri):
    storage.write_text(storage.join(dataset_uri, "notes.txt"), "mine")
    with pytest.raises(OutputDirectoryError, match=r"ds is not empty and holds no manifest"):
        build_dataset_in_memory(_tiny(), dataset_uri, overwrite=True)
    assert storage.read_text(storage.join(dataset_uri, "notes.txt")) == "mine"


def test_a_shard_changed_in_the_store_is_refused_naming_its_uri(dataset_uri):
    build_dataset_in_memory(_tiny(), dataset_uri)
    valid = storage.read_bytes(storage.join(dataset_uri, "valid", SHARD))
    storage.write_bytes(storage.join(dataset_uri, "test", SHARD), valid)
    shard = storage.join(dataset_uri, "test", SHARD)
    with pytest.raises(DatasetFormatError, match=rf"^{shard}: split 'test': "):
        load_dataset(dataset_uri)
