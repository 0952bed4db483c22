"""Tuning spaces: the shipped files are valid and cover every method; malformed files fail
with errors naming the file, the line and the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from invlearn_ray.experiments.spaces import Distribution, SpaceError, load_space
from invlearn_ray.methods.registry import METHODS
from invlearn_ray.models.backbones import BACKBONES
from invlearn_ray.training.config import TrainConfig

SPACES_DIR = Path(__file__).resolve().parents[2] / "tune_spaces"


def write_space(tmp_path: Path, text: str, name: str = "study") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


VALID = """
    description: a study
    metric: valid/gauc
    mode: max
    fixed:
      method: ig
    search:
      lr: {loguniform: [1e-4, 1.0e-2]}
      dual_lr_ratio: {choice: [0.1, 1, 10]}
      sampling_rate: {randint: [1, 3]}
"""


def test_every_shipped_space_loads_and_every_method_has_one():
    spaces = [load_space(path) for path in sorted(SPACES_DIR.glob("*.yaml"))]
    covered = {method for space in spaces for method in space.methods}
    assert covered == set(METHODS)


def test_ig_space_searches_gamma_log_uniform_the_paper_ratios_step_rule_and_backbones():
    space = load_space(SPACES_DIR / "ig.yaml")
    assert space.search["lr"].kind == "loguniform"
    # The paper's α = 1, 10, 100 × γ, on a grid from 0.1 to 300 (issue 13: no best at an edge).
    ratios = set(space.search["dual_lr_ratio"].args)
    assert {0.1, 1.0, 10.0, 100.0} <= ratios and min(ratios) <= 0.1 and max(ratios) >= 300
    assert set(space.search["step_rule"].args) == {"sgd", "sign", "adam"}
    assert set(space.search["backbone"].args) == set(BACKBONES)


def test_explicit_negative_space_compares_the_three_losses_with_eps_down_to_1e8():
    space = load_space(SPACES_DIR / "explicit_negative.yaml")
    assert set(space.methods) == {"sl_epsce", "sl_complement", "sl_focal"}
    low, _ = space.search["eps"].args
    assert space.search["eps"].kind == "loguniform" and low <= 1e-8
    assert all(value < 0 for value in space.search["neg_weight"].args)


def test_baseline_spaces_search_their_own_knobs():
    assert {"max_drop", "num_gradual"} <= set(load_space(SPACES_DIR / "tce.yaml").search)
    assert "beta" in load_space(SPACES_DIR / "rce.yaml").search
    assert "sampling_rate" in load_space(SPACES_DIR / "ns.yaml").search
    assert {"tau_pos", "tau_neg"} <= set(load_space(SPACES_DIR / "bsl.yaml").search)


def test_a_valid_space_becomes_trial_configs_with_seed_zero_and_its_select_metric(tmp_path):
    space = load_space(write_space(tmp_path, VALID))
    assert space.name == "study"
    assert space.search["lr"] == Distribution("loguniform", (1e-4, 1e-2))
    config = space.trial_config({"lr": 3e-3, "dual_lr_ratio": 10.0, "sampling_rate": 2})
    assert config == TrainConfig(
        method="ig", lr=3e-3, dual_lr_ratio=10.0, sampling_rate=2, seed=0, select_metric="gauc"
    )


def test_trial_config_rejects_parameters_the_space_does_not_search(tmp_path):
    space = load_space(write_space(tmp_path, VALID))
    with pytest.raises(SpaceError, match=r"\['tau'\] are not searched"):
        space.trial_config({"lr": 1e-3, "tau": 0.5})


def test_randint_includes_its_upper_end_and_samples_stay_in_range(tmp_path):
    space = load_space(write_space(tmp_path, VALID))
    domains = space.param_space()
    rng = np.random.default_rng(0)
    ints = set(domains["sampling_rate"].sample(size=300, random_state=rng))
    assert ints == {1, 2, 3}
    rates = domains["lr"].sample(size=300, random_state=rng)
    assert all(1e-4 <= value <= 1e-2 for value in rates)
    assert set(domains["dual_lr_ratio"].sample(size=100, random_state=rng)) == {0.1, 1.0, 10.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (VALID + "    budget: 3\n", r"study.yaml:10: key 'budget': unknown key; valid top-level"),
        (
            VALID.replace("dual_lr_ratio:", "dual_lr_ration:"),
            r"study.yaml:8: key 'search.dual_lr_ration': 'dual_lr_ration' is not a TrainConfig "
            r"field; valid fields: \[",
        ),
        (
            VALID.replace("[1e-4, 1.0e-2]", "[1.0e-2, 1e-4]"),
            r":7: key 'search.lr.loguniform': loguniform needs low < high",
        ),
        (
            VALID.replace("[1e-4, 1.0e-2]", "[0.0, 1.0e-2]"),
            r":7: key 'search.lr.loguniform': loguniform needs low > 0",
        ),
        (
            VALID.replace("loguniform", "logunifrom"),
            r":7: key 'search.lr.logunifrom': unknown distribution 'logunifrom'; valid:",
        ),
        (
            VALID.replace("{randint: [1, 3]}", "{randint: [1, 2.5]}"),
            r"key 'search.sampling_rate.randint': TrainConfig.sampling_rate expects an int",
        ),
        (
            VALID.replace("{loguniform: [1e-4, 1.0e-2]}", "[1e-4, 1.0e-2]"),
            r"key 'search.lr': give exactly one distribution",
        ),
        (
            VALID.replace("method: ig", "method: igg"),
            r":4: key 'fixed': the fixed values make no valid TrainConfig: .*'igg'",
        ),
        (
            VALID.replace("[0.1, 1, 10]", "[0.1, -1, 10]"),
            r"key 'search.dual_lr_ratio': value -1.0 makes no valid TrainConfig",
        ),
        (
            VALID.replace("[0.1, 1, 10]", "[0.1, 1, 1]"),
            r"key 'search.dual_lr_ratio.choice': choice lists a value twice",
        ),
        (VALID + "      seed: {choice: [0, 1]}\n", r"key 'search.seed': seed is set by the study"),
        (
            VALID + "      epochs: {randint: [1, 5]}\n",
            r"key 'search.epochs': epochs is the trials' time axis",
        ),
        (
            VALID + "      method: {choice: [ns, idl]}\n",
            r"key 'search.method': is both fixed and searched",
        ),
        (
            VALID.replace("valid/gauc", "test/gauc"),
            r":2: key 'metric': 'test/gauc' is not a selectable validation metric",
        ),
        (VALID.replace("mode: max", "mode: min"), r":3: key 'mode': must be 'max'"),
        (
            VALID + "      lr: {uniform: [0.1, 0.2]}\n",
            r"study.yaml:10: key 'search.lr' appears twice \(first on line 7\)",
        ),
        ("metric: [valid/gauc\n", r"study.yaml:2:1: not valid YAML"),
        ("metric: valid/gauc\n", r"missing required key 'search'"),
    ],
)
def test_malformed_space_files_fail_naming_file_line_and_key(tmp_path, text, message):
    path = write_space(tmp_path, text)
    with pytest.raises(SpaceError, match=message):
        load_space(path)


def test_a_missing_space_file_says_where_spaces_live(tmp_path):
    with pytest.raises(SpaceError, match="no such space file"):
        load_space(tmp_path / "nope.yaml")


def test_pinning_a_searched_field_moves_it_to_fixed():
    space = load_space(SPACES_DIR / "ig.yaml").pinned(backbone="neumf", epochs=3)
    assert "backbone" not in space.search
    # NeuMF has no item biases: the popularity start is dropped, and bias_init fixed.
    assert space.fixed == {"method": "ig", "backbone": "neumf", "epochs": 3, "bias_init": "zero"}
    assert space.trial_config({"lr": 1e-3, "dual_lr_ratio": 1.0, "step_rule": "sgd"}).epochs == 3


def test_pinning_outside_the_searched_values_or_against_fixed_fails():
    space = load_space(SPACES_DIR / "explicit_negative.yaml")
    assert space.pinned(method="sl_focal").methods == ("sl_focal",)
    with pytest.raises(SpaceError, match=r"cannot pin method='bsl'"):
        space.pinned(method="bsl")
    with pytest.raises(SpaceError, match=r"cannot pin method='ns': the space fixes it to 'ig'"):
        load_space(SPACES_DIR / "ig.yaml").pinned(method="ns")
    with pytest.raises(SpaceError, match=r"'lrr' is not a TrainConfig field"):
        space.pinned(lrr=0.1)
    with pytest.raises(SpaceError, match=r"make no valid TrainConfig.*batch_size"):
        space.pinned(batch_size=0)


def test_a_best_value_near_a_range_end_is_flagged_in_log_space_for_loguniform(tmp_path):
    space = load_space(write_space(tmp_path, VALID))
    # lr is loguniform [1e-4, 1e-2]: 1.5e-4 is 9 % of the log span from the low end, 1e-3 the
    # middle; 9e-3 is 98 % (a linear reading would call 1.5e-4 and 1e-3 both "low").
    assert space.edges({"lr": 1.5e-4}) == {"lr": "low"}
    assert space.edges({"lr": 1e-3}) == {}
    assert space.edges({"lr": 9e-3}) == {"lr": "high"}
    # Numeric choices have ends; randint ranges are linear; unsearched fields are ignored.
    assert space.edges({"dual_lr_ratio": 0.1, "sampling_rate": 3, "epochs": 99}) == {
        "dual_lr_ratio": "low",
        "sampling_rate": "high",
    }
    assert space.edges({"dual_lr_ratio": 1, "sampling_rate": 2}) == {}


def test_unordered_or_two_value_choices_have_no_edge():
    assert Distribution("choice", ("sign", "sgd", "adam")).edge("sign") is None
    assert Distribution("choice", (128, 1024)).edge(128) is None
    assert Distribution("choice", (True, False, True)).edge(True) is None
    assert Distribution("choice", (128, 512, 1024)).edge(1024) == "high"


def test_a_lower_end_at_zero_is_the_knob_switched_off_not_an_edge():
    assert Distribution("uniform", (0.0, 2.0)).edge(0.005) is None
    assert Distribution("uniform", (0.0, 2.0)).edge(1.95) == "high"
    assert Distribution("choice", (0.0, 1e-6, 1e-4, 1e-3)).edge(0.0) is None
