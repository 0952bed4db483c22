"""What a cell's study keeps fixed."""

from __future__ import annotations

import json
import shutil

from invlearn_ray.experiments.benchmark.entries import BEST_EXPLICIT
from invlearn_ray.experiments.benchmark.grid import Cell, left_out_cells, runs_on
from invlearn_ray.experiments.benchmark.profiles import PROFILES
from invlearn_ray.experiments.benchmark.tuning import (
    TunedCell,
    edge_notes,
    popularity_start,
    study_pins,
)
from invlearn_ray.experiments.spaces import SPACES_DIR, load_space


def test_study_pins_the_row_and_the_unlabeled_source_only_without_observed_rows(
    tiny_dataset, tmp_path
):
    space = load_space(SPACES_DIR / "ig.yaml")
    profile = PROFILES["tiny"]
    pins = study_pins(profile, "ig", "neumf", space, {"lr": 0.01}, tiny_dataset)
    assert pins["backbone"] == "neumf" and pins["method"] == "ig" and pins["lr"] == 0.01
    assert "unlabeled_source" not in pins  # the tiny synthetic data has observed rows
    assert pins["epochs"] == profile.train["epochs"]

    # The same data without observed-unlabeled rows: "observed" could not train, "both" would
    # equal "sampled", so the study does not spend trials on them.
    bare = tmp_path / "bare"
    shutil.copytree(tiny_dataset, bare)
    manifest = json.loads((bare / "manifest.json").read_text())
    manifest["counts"]["unclear"]["rows"] = 0
    (bare / "manifest.json").write_text(json.dumps(manifest))
    assert study_pins(profile, "ig", "gmf", space, {}, bare)["unlabeled_source"] == "sampled"
    given = {"unlabeled_source": "both"}
    assert study_pins(profile, "ig", "gmf", space, given, bare)["unlabeled_source"] == "both"
    none_space = load_space(SPACES_DIR / "none.yaml")
    assert "unlabeled_source" not in study_pins(profile, "none", "gmf", none_space, {}, bare)


def test_only_a_backbone_with_item_biases_searches_the_popularity_start(tiny_dataset):
    space = load_space(SPACES_DIR / "ig.yaml")
    profile = PROFILES["tiny"]
    for backbone in ("gmf", "neumf", "mf", "lightgcn"):
        pinned = space.pinned(**study_pins(profile, "ig", backbone, space, {}, tiny_dataset))
        assert "bias_init" not in pinned.search and pinned.fixed["bias_init"] == "zero"
    pinned = space.pinned(**study_pins(profile, "ig", "biased_mf", space, {}, tiny_dataset))
    assert pinned.search["bias_init"].args == ("zero", "popularity")


def test_a_biased_row_starts_from_its_datasets_tuned_popularity_scorer():
    scorer = TunedCell({"popularity_prior": 1.6, "popularity_play_weight": 0.85, "lr": 1e-3})
    tuned = {Cell("ml100k", backbone, "popularity"): scorer for backbone in ("gmf", "biased_mf")}
    start = popularity_start(Cell("ml100k", "biased_mf", "ig"), tuned)
    assert start == {"popularity_prior": 1.6, "popularity_play_weight": 0.85}
    # No item biases, another dataset, or the scorer's own row: nothing to start from.
    assert popularity_start(Cell("ml100k", "gmf", "ig"), tuned) == {}
    assert popularity_start(Cell("synthetic", "biased_mf", "ig"), tuned) == {}
    assert popularity_start(Cell("ml100k", "biased_mf", "popularity"), tuned) == {}


def test_watched_positive_is_left_out_only_where_there_are_no_observed_rows(tiny_dataset, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_dataset, bare)
    manifest = json.loads((bare / "manifest.json").read_text())
    manifest["counts"]["unclear"]["rows"] = 0
    (bare / "manifest.json").write_text(json.dumps(manifest))
    assert runs_on("watched_positive", tiny_dataset)
    assert not runs_on("watched_positive", bare)
    assert runs_on("ig", bare) and runs_on(BEST_EXPLICIT, bare)
    profile = PROFILES["tiny"].replace(entries=("ig", "watched_positive"))
    left_out = left_out_cells(profile, {"full": tiny_dataset, "bare": bare})
    assert left_out == [Cell("bare", "gmf", "watched_positive")]


def test_edge_notes_give_the_value_its_end_and_the_range_it_was_drawn_from():
    space = load_space(SPACES_DIR / "ig.yaml")
    notes = edge_notes(
        space, {"lr": 0.09, "init_scale": 1.0, "step_rule": "sign", "test_batch_size": 1024}
    )
    assert notes == (
        "lr = 0.09 (high end of loguniform [1e-05, 0.1])",
        "test_batch_size = 1024 (high end of choice [64, 128, 512, 1024])",
    )
