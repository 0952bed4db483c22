"""The tuning command line: what it resolves and how it refuses bad input (the study itself is
tested in tests/experiments/test_tune.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.scripts import load_script

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tune_cli():
    return load_script("pipelines/tune.py", "tune_cli")


def test_smoke_test_resolves_to_a_small_ig_study(tune_cli, tmp_path):
    space, dataset, budget, args = tune_cli.resolve(["--smoke-test", "--out", str(tmp_path)])
    assert space.name == "ig" and space.fixed["method"] == "ig"
    assert space.fixed["backbone"] == "gmf" and "backbone" not in space.search
    assert dataset.source == "synthetic" and dataset.preset == "tiny"
    assert budget.trials == 4 and args.out == tmp_path


def test_pins_and_budget_reach_the_study(tune_cli):
    space, _, budget, args = tune_cli.resolve(
        [
            "--space",
            str(REPO_ROOT / "tune_spaces" / "bsl.yaml"),
            "--dataset",
            "synthetic",
            "--set",
            "backbone=neumf",
            "--trials",
            "6",
            "--concurrency",
            "3",
        ]
    )
    assert space.fixed["backbone"] == "neumf" and budget.trials == 6 and budget.concurrency == 3
    assert args.out == REPO_ROOT / "outputs" / "studies" / "bsl"


@pytest.mark.parametrize(
    ("space_text", "extra", "message"),
    [
        ("metric: valid/gauc\nmode: max\nsearch:\n  lr: {uniform: [1, 0]}\n", [], "search.lr"),
        ("metric: valid/gauc\nmode: max\nsearch:\n  lrate: {choice: [1]}\n", [], "lrate"),
        (None, ["--set", "step_rule=newton"], "step_rule"),
        (None, ["--trials", "0"], "expected a positive integer, got 0"),
        (None, ["--dataset", "synthetic:huge"], "huge"),
    ],
)
def test_bad_input_is_a_usage_error_naming_the_key(
    tune_cli, tmp_path, capsys, space_text, extra, message
):
    space = REPO_ROOT / "tune_spaces" / "ig.yaml"
    if space_text is not None:
        space = tmp_path / "broken.yaml"
        space.write_text(space_text)
    argv = ["--space", str(space), "--dataset", "synthetic", *extra]
    with pytest.raises(SystemExit) as stopped:
        tune_cli.resolve(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_space_and_dataset_are_required(tune_cli, capsys):
    with pytest.raises(SystemExit):
        tune_cli.resolve(["--space", "tune_spaces/ig.yaml"])
    assert "--space and --dataset are required" in capsys.readouterr().err


def test_search_is_auto_by_default_and_selectable(tune_cli):
    study = ["--space", str(REPO_ROOT / "tune_spaces" / "ig.yaml"), "--dataset", "synthetic"]
    _, _, budget, _ = tune_cli.resolve([*study, "--trials", "16"])
    assert budget.search == "auto" and budget.search_algorithm == "tpe"
    _, _, budget, _ = tune_cli.resolve([*study, "--trials", "16", "--search", "random"])
    assert budget.search_algorithm == "random"


def test_an_unknown_search_is_a_usage_error(tune_cli, capsys):
    study = ["--space", str(REPO_ROOT / "tune_spaces" / "ig.yaml"), "--dataset", "synthetic"]
    with pytest.raises(SystemExit) as stopped:
        tune_cli.resolve([*study, "--search", "grid"])
    assert stopped.value.code == 2
    assert "invalid choice: 'grid'" in capsys.readouterr().err


def test_trials_reuse_processes_unless_asked_for_new_ones(tune_cli):
    study = ["--space", str(REPO_ROOT / "tune_spaces" / "ig.yaml"), "--dataset", "synthetic"]
    _, _, budget, _ = tune_cli.resolve(study)
    assert budget.reuse_processes is True
    _, _, budget, _ = tune_cli.resolve([*study, "--no-reuse-processes"])
    assert budget.reuse_processes is False
