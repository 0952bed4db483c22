"""Given-config files: scopes merge narrowest last; anything malformed names file, line, key."""

from __future__ import annotations

import pytest

from invlearn_ray.experiments.benchmark.errors import BenchmarkConfigError
from invlearn_ray.experiments.benchmark.given import GivenConfigs, load_given_configs
from invlearn_ray.experiments.spaces import SPACES_DIR


def test_given_configs_merge_narrower_scopes_last(tmp_path):
    path = tmp_path / "given.yaml"
    path.write_text("all: {epochs: 4, lr: 1e-3}\nig: {lr: 2e-3}\nneumf/ig: {lr: 3e-3}\n")
    given = load_given_configs(path)
    assert given.for_run("ig", "gmf") == {"epochs": 4, "lr": 2e-3}
    assert given.for_run("ig", "neumf") == {"epochs": 4, "lr": 3e-3}
    assert given.for_run("ns", "neumf") == {"epochs": 4, "lr": 1e-3}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ig: {lrr: 1}\n", r"given.yaml:1: key 'ig.lrr': not a TrainConfig field"),
        ("all: {}\nigg: {lr: 1}\n", r"given.yaml:2: key 'igg': unknown scope"),
        ("ig: {seed: 1}\n", r"key 'ig.seed': seed is set by the benchmark grid"),
        ("ig: {method: ns}\n", r"key 'ig.method': method is set by the benchmark grid"),
        ("ig: {epochs: 2.5}\n", r"key 'ig.epochs': TrainConfig.epochs expects an int"),
        ("ig: [1, 2]\n", r"key 'ig': must map TrainConfig fields"),
    ],
)
def test_malformed_given_configs_name_file_line_and_key(tmp_path, text, message):
    path = tmp_path / "given.yaml"
    path.write_text(text)
    with pytest.raises(BenchmarkConfigError, match=message):
        load_given_configs(path)


def test_the_shipped_given_configs_are_valid():
    shipped = sorted((SPACES_DIR.parent / "pipelines" / "configs").glob("*.yaml"))
    assert shipped
    for path in shipped:
        assert load_given_configs(path).scopes, path


def test_given_configs_default_is_empty():
    assert GivenConfigs().for_run("ig", "gmf") == {}
