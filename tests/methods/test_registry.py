"""The method table: every per-method fact is derived from one MethodSpec per method."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from invlearn_ray.data.build import make_synthetic_recdata
from invlearn_ray.data.synthetic import SyntheticConfig
from invlearn_ray.methods import registry as methods
from invlearn_ray.methods.registry import (
    BASE_METHODS,
    METHOD_SPECS,
    METHODS,
    STATIC_STEP_METHODS,
    MethodSpec,
    UnknownMethodError,
    build_objective,
    method_spec,
)
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import Trainer

SPACES_DIR = Path(__file__).resolve().parents[2] / "tune_spaces"


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic_recdata(SyntheticConfig.preset("tiny"))


def test_the_derived_tables_follow_the_specs_in_table_order():
    assert METHODS == tuple(METHOD_SPECS) and METHODS[:3] == ("none", "ns", "tce")
    assert all(spec.name == name for name, spec in METHOD_SPECS.items())
    assert {"none", "ns", "rce", "idl", "ig"} <= set(STATIC_STEP_METHODS)
    assert not {"tce", "dns", "srns", "sl", "bsl"} & set(STATIC_STEP_METHODS)
    assert "ig" not in BASE_METHODS and {"none", "idl", "bsl"} <= set(BASE_METHODS)


def test_every_spec_names_a_shipped_space_file():
    for spec in METHOD_SPECS.values():
        assert (SPACES_DIR / spec.space_file).is_file(), spec.name


def test_an_unknown_method_is_an_error_that_lists_the_valid_ones():
    with pytest.raises(UnknownMethodError, match=r"unknown method 'magic'; valid: \['none', 'ns'"):
        method_spec("magic")
    with pytest.raises(ValueError, match=r"method = 'magic' is not one of \['none'"):
        TrainConfig(method="magic")
    with pytest.raises(ValueError, match=r"ig_base = 'ig' is not one of"):
        TrainConfig(method="ig", ig_base="ig")


def test_build_objective_refuses_an_unknown_method_instead_of_training_softmax():
    config = TrainConfig()
    config.method = "magic"  # a config that skipped validation (it used to train the softmax)
    with pytest.raises(UnknownMethodError, match="unknown method 'magic'"):
        build_objective(config, 10, torch.device("cpu"))


def test_a_method_that_does_not_train_has_no_objective():
    with pytest.raises(ValueError, match="trains=False, so it has no objective"):
        MethodSpec(
            name="scorer",
            display_name="Scorer",
            summary="computed, not trained",
            objective=methods._fixed(lambda score, batch, step, epoch: None),
            space_file="none.yaml",
            trains=False,
        )


@pytest.mark.parametrize("method", BASE_METHODS)
def test_a_methods_batches_carry_what_its_spec_says(tiny, method):
    spec = method_spec(method)
    batch = Trainer(TrainConfig(method=method, batch_size=64), tiny).batches.plan(0).supervised[0]
    assert (batch.unlabeled_users is not None) == spec.needs_unlabeled
    assert (batch.negatives is not None) == spec.sampled_negatives
    assert (batch.candidates is not None) == (spec.candidates is not None)


def test_idl_weight_histograms_are_recorded_for_the_methods_that_learn_them(tiny):
    for method in ("ns", "idl", "ig"):
        result = Trainer(TrainConfig(method=method, epochs=1, batch_size=64), tiny).fit()
        assert bool(result.weight_histograms) == method_spec(method).idl_weights, method


def test_every_method_field_is_read_by_some_method_and_is_a_train_config_field():
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    assert methods.METHOD_FIELDS <= fields
    assert all(methods.readers_of(name) for name in methods.METHOD_FIELDS)


def test_a_setting_the_method_ignores_is_named_and_one_it_reads_is_not():
    assert methods.unread_settings("ig", {"tau": 0.5, "dual_lr_ratio": 10.0}) == ["tau"]
    assert methods.unread_settings("sl", {"tau": 0.5, "lr": 0.1}) == []
    # IG reads its base method's fields; bias_init=popularity reads the scorer's.
    assert methods.unread_settings("ig", {"ig_base": "tce", "max_drop": 0.1}) == []
    assert methods.unread_settings("none", {"popularity_prior": 2.0}) == ["popularity_prior"]
    assert (
        methods.unread_settings("none", {"bias_init": "popularity", "popularity_prior": 2.0}) == []
    )
