"""Benchmark datasets: names, parsing, and the label fraction of a build."""

from __future__ import annotations

import pytest

from invlearn_ray.experiments.datasets import DatasetChoiceError, DatasetSpec, parse_dataset


def test_dataset_names_and_parsing(tmp_path, tiny_dataset):
    assert parse_dataset("synthetic") == DatasetSpec("synthetic")
    assert parse_dataset("synthetic:tiny").name == "synthetic-tiny"
    assert DatasetSpec("ml100k").with_label_fraction(0.3).name == "ml100k@lf0.3"
    assert parse_dataset(str(tiny_dataset)).name == "tiny"
    with pytest.raises(DatasetChoiceError, match="no manifest.json at"):
        parse_dataset(str(tmp_path / "nothing"))
    with pytest.raises(DatasetChoiceError, match="unknown synthetic preset 'huge'"):
        parse_dataset("synthetic:huge")
    with pytest.raises(DatasetChoiceError, match="its label fraction cannot change"):
        DatasetSpec("path", path=str(tiny_dataset), label_fraction=0.5)


def test_label_fraction_reaches_the_build_config():
    config = DatasetSpec("synthetic", preset="tiny", label_fraction=0.1).build_config()
    assert config.split.label_fraction == 0.1 and config.dataset_name == "synthetic-tiny@lf0.1"
