"""The manifest record: a JSON round trip, and a schema check with one-line errors."""

from __future__ import annotations

import json

import pytest

from invlearn_ray.data.errors import DatasetFormatError
from invlearn_ray.data.manifest import MANIFEST_FILE, SCHEMA_VERSION, Manifest, ShardFile


def test_a_written_manifest_reads_back_equal(tiny_dataset, tmp_path):
    manifest = Manifest.read(tiny_dataset)
    assert all(isinstance(r, ShardFile) for r in manifest.shard_files["valid"])
    assert Manifest.from_json(json.loads(json.dumps(manifest.to_json()))) == manifest
    manifest.write(tmp_path)
    assert Manifest.read(tmp_path) == manifest
    assert (tmp_path / MANIFEST_FILE).read_text() == (tiny_dataset / MANIFEST_FILE).read_text()


def test_a_manifest_without_a_synthetic_source_has_no_synthetic_block(tiny_dataset):
    values = Manifest.read(tiny_dataset).to_json()
    del values["synthetic"]
    assert "synthetic" not in Manifest.from_json(values).to_json()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda values: values.update(schema_version=1),
            "manifest.json: schema_version 1, but this code reads version "
            f"{SCHEMA_VERSION}. Rebuild the dataset with this version's pipelines/build_data.py.",
        ),
        (lambda values: values.pop("counts"), r"missing \['counts'\], unknown \[\]"),
        (lambda values: values.update(colour="red"), r"missing \[\], unknown \['colour'\]"),
    ],
)
def test_another_schema_or_shape_is_a_one_line_error(tiny_dataset, edit, message):
    values = Manifest.read(tiny_dataset).to_json()
    edit(values)
    with pytest.raises(DatasetFormatError, match=message) as raised:
        Manifest.from_json(values)
    assert "\n" not in str(raised.value)
