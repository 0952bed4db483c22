"""How studies draw: TPE over the space file's ranges (log scale, both randint ends, choices
valid only beside other values), one seed per study, the same draws for the same study."""

from __future__ import annotations

import math

import optuna
import pytest

from invlearn_ray.experiments.spaces import SPACES_DIR, SpaceError, load_space, parse_space
from invlearn_ray.experiments.tune.search import (
    BestEpochOptunaSearch,
    TpeSpace,
    first_draws,
    study_seed,
    tpe_searcher,
)
from invlearn_ray.training.config import TrainConfig

IG = load_space(SPACES_DIR / "ig.yaml")


def _seeds_of(**changes) -> tuple[int, int]:
    study = {"space": IG.pinned(backbone="gmf"), "dataset": "synthetic", "label_fraction": 0.1}
    return study_seed(**study, base_seed=0), study_seed(**{**study, **changes}, base_seed=0)


def test_a_study_seed_is_stable_and_in_numpys_range():
    seed = study_seed(IG.pinned(backbone="gmf"), "synthetic", 0.1, 0)
    assert seed == study_seed(IG.pinned(backbone="gmf"), "synthetic", 0.1, 0)
    assert 0 <= seed < 2**32


@pytest.mark.parametrize(
    "changes",
    [
        {"space": IG.pinned(backbone="neumf")},
        {"space": load_space(SPACES_DIR / "idl.yaml").pinned(backbone="gmf")},
        {"dataset": "ml100k"},
        {"label_fraction": 0.03},
    ],
    ids=["backbone", "space", "dataset", "label_fraction"],
)
def test_every_part_of_a_studys_identity_changes_its_seed(changes):
    same, other = _seeds_of(**changes)
    assert same != other


def test_the_base_seed_changes_every_studys_seed():
    space = IG.pinned(backbone="gmf")
    assert study_seed(space, "synthetic", 0.1, 0) != study_seed(space, "synthetic", 0.1, 1)


@pytest.mark.parametrize("search", ["tpe", "random"])
def test_two_studies_draw_differently_and_a_rerun_draws_the_same(search):
    gmf, neumf = IG.pinned(backbone="gmf"), IG.pinned(backbone="neumf")
    seed_gmf = study_seed(gmf, "synthetic", 1.0)
    seed_neumf = study_seed(neumf, "synthetic", 1.0)
    first = first_draws(gmf, search, seed_gmf, 4)
    assert first_draws(gmf, search, seed_gmf, 4) == first
    other = first_draws(neumf, search, seed_neumf, 4)
    # The same searched fields, drawn elsewhere: no configuration in common.
    assert not any(a["lr"] == b["lr"] for a in first for b in other)


def test_tpe_samples_the_space_files_ranges_on_their_scales():
    searcher = tpe_searcher(IG, seed=3)
    draws = [searcher.suggest(f"t{index}") for index in range(60)]
    trial = searcher._ot_trials["t0"]
    lr = trial.distributions["lr"]
    assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log
    assert (lr.low, lr.high) == tuple(IG.search["lr"].args)
    assert trial.distributions["init_scale"].log  # every loguniform range
    for draw in draws:
        assert IG.search["lr"].contains(draw["lr"])
        assert draw["dual_lr_ratio"] in IG.search["dual_lr_ratio"].args
        assert IG.trial_config(draw).lr == draw["lr"]  # every draw is a valid TrainConfig


def test_tpe_draws_a_choice_valid_only_beside_another_value_only_there():
    draws = first_draws(IG, "tpe", seed=0, count=80)
    assert {d["bias_init"] for d in draws if d["backbone"] != "biased_mf"} == {"zero"}
    assert {d["bias_init"] for d in draws if d["backbone"] == "biased_mf"} == {
        "zero",
        "popularity",
    }
    for draw in draws:  # random search would fail 2 of 5 such trials; TPE fails none
        TrainConfig.from_dict({**IG.fixed, **draw})


def test_a_randint_range_includes_both_ends():
    space = parse_space(
        {"metric": "valid/gauc", "search": {"embedding_dim": {"randint": [4, 5]}}}, "dims"
    )
    assert {d["embedding_dim"] for d in first_draws(space, "tpe", 0, 30)} == {4, 5}


def _without_sampled_rows(methods: list[str]):
    """A space where a method that learns from unlabeled rows can train only on observed
    ones: ``sampling_rate=0`` leaves ``unlabeled_source='sampled'`` no rows."""
    return parse_space(
        {
            "metric": "valid/gauc",
            "fixed": {"sampling_rate": 0},
            "search": {
                "method": {"choice": methods},
                "unlabeled_source": {"choice": ["sampled", "observed", "both"]},
            },
        },
        "no_sampled_rows",
    )


def test_tpe_draws_a_conditional_choice_after_the_field_it_depends_on():
    # 'method' is listed first but depends on 'unlabeled_source': it is drawn after it.
    draws = first_draws(_without_sampled_rows(["none", "ig"]), "tpe", seed=1, count=40)
    assert {d["method"] for d in draws if d["unlabeled_source"] == "sampled"} == {"none"}
    assert {d["method"] for d in draws if d["unlabeled_source"] != "sampled"} == {"none", "ig"}


def test_tpe_refuses_a_choice_it_would_have_to_narrow_to_several_values():
    # Beside unlabeled_source='sampled', two of the three methods remain: an Optuna choice
    # cannot change its values between trials.
    with pytest.raises(SpaceError, match=r"TPE cannot search method: .* \['none', 'dns'\]"):
        TpeSpace(_without_sampled_rows(["none", "dns", "ig"]))


def test_tpe_is_told_a_trials_best_epoch_not_its_last():
    searcher = tpe_searcher(IG.pinned(backbone="gmf"), seed=0)
    searcher.suggest("a")
    for epoch, score in enumerate([0.60, 0.70, float("nan"), 0.65]):
        searcher.on_trial_result("a", {"valid/gauc": score, "training_iteration": epoch + 1})
    searcher.on_trial_complete("a", {"valid/gauc": 0.65})
    (trial,) = searcher._ot_study.trials
    assert trial.value == pytest.approx(0.70)
    assert searcher.told_trials == 1
    searcher.suggest("b")  # every epoch undefined: pruned, not a score of NaN
    searcher.on_trial_result("b", {"valid/gauc": math.nan, "training_iteration": 1})
    searcher.on_trial_complete("b", {"valid/gauc": math.nan})
    assert searcher._ot_study.trials[1].state == optuna.trial.TrialState.PRUNED
    assert isinstance(searcher, BestEpochOptunaSearch)
