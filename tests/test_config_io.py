"""Configuration I/O shared by every command line: YAML with lines, typed --set values."""

from __future__ import annotations

import pytest

from invlearn_ray.config_io import (
    ConfigFileError,
    Locator,
    check_field_value,
    load_yaml_with_lines,
    parse_overrides,
)


def test_exponent_only_numbers_read_as_floats():
    values, _ = load_yaml_with_lines("a: [1e-4, 2E+3, -1e-8, 1.5e-2]\n", "x.yaml")
    assert values["a"] == [1e-4, 2e3, -1e-8, 1.5e-2]


def test_command_line_overrides_are_typed_and_checked():
    values = parse_overrides(["epochs=3", "lr=1e-3", "backbone=neumf", "compile=false"])
    assert values == {"epochs": 3, "lr": 1e-3, "backbone": "neumf", "compile": False}
    with pytest.raises(ValueError, match="takes KEY=VALUE"):
        parse_overrides(["epochs"])
    with pytest.raises(ValueError, match="'epoch' is not a TrainConfig field"):
        parse_overrides(["epoch=3"])
    with pytest.raises(ValueError, match="TrainConfig.epochs expects an int, got str 'three'"):
        parse_overrides(["epochs=three"])


def test_every_key_path_has_its_line_and_duplicate_keys_are_errors():
    values, lines = load_yaml_with_lines("all:\n  epochs: 3\nig:\n  lr: 1e-3\n", "c.yaml")
    assert values == {"all": {"epochs": 3}, "ig": {"lr": 1e-3}}
    assert lines[("ig", "lr")] == 4 and lines[("all",)] == 1
    with pytest.raises(
        ConfigFileError, match=r"c.yaml:3: key 'a.b' appears twice \(first on line 2\)"
    ):
        load_yaml_with_lines("a:\n  b: 1\n  b: 2\n", "c.yaml")
    with pytest.raises(ConfigFileError, match=r"c.yaml:2:1: not valid YAML"):
        load_yaml_with_lines("a: [1, 2\n", "c.yaml")


def test_the_locator_names_the_line_of_the_deepest_known_key():
    _, lines = load_yaml_with_lines("ig:\n  lr: 1\n", "c.yaml")
    at = Locator("c.yaml", lines, KeyError)
    error = at.error(("ig", "lr", "low"), "too small")
    assert isinstance(error, KeyError) and error.args[0] == "c.yaml:2: key 'ig.lr.low': too small"
    assert Locator("<mapping>", {}).error(("x",), "bad").args[0] == "<mapping>: key 'x': bad"


def test_values_are_typed_as_their_train_config_field():
    assert check_field_value("lr", 1) == 1.0 and isinstance(check_field_value("lr", 1), float)
    with pytest.raises(ValueError, match="expects an int, got the boolean True"):
        check_field_value("epochs", True)
    with pytest.raises(ValueError, match="expects a finite number"):
        check_field_value("lr", float("nan"))
