"""The benchmark grid, given configs, run execution with failure capture and reuse, and the
report's tables and figures."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import mlflow
import pytest
import torch

from invlearn_ray.core.config import TrainConfig
from invlearn_ray.core.inverse_gradient import CANDIDATES
from invlearn_ray.core.methods import METHODS
from invlearn_ray.distributed import benchmark, report
from invlearn_ray.distributed.benchmark import (
    BEST_EXPLICIT,
    ENTRIES,
    ENTRY_SPACES,
    PROFILES,
    SPACES_DIR,
    BenchmarkConfigError,
    DatasetSpec,
    GivenConfigs,
    Profile,
    entry_method,
    load_given_configs,
    parse_dataset,
    plan_runs,
    runs_on,
    study_pins,
)
from invlearn_ray.distributed.run_dir import DIRECTION_LOG_FILE
from invlearn_ray.distributed.runs import (
    RunOutcome,
    RunSpec,
    execute_runs,
    finished_outcome,
)
from invlearn_ray.distributed.spaces import load_space
from invlearn_ray.distributed.tracking import Tracker

TINY_TRAIN = {"epochs": 2, "batch_size": 64, "test_batch_size": 64, "embedding_dim": 8}


pytestmark = pytest.mark.usefixtures("no_tracking_env")


# ------------------------------------------------------------------------------ the grid


def test_every_entry_has_a_space_that_trains_it():
    assert set(ENTRY_SPACES) == set(ENTRIES) == {*METHODS, BEST_EXPLICIT}
    for entry, file in ENTRY_SPACES.items():
        methods = load_space(SPACES_DIR / file).methods
        assert entry in methods or (entry == BEST_EXPLICIT and len(methods) == 3)


def test_profiles_are_valid_and_the_sweep_is_a_profile():
    assert {"tiny", "quick", "standard", "sparse-sweep"} <= set(PROFILES)
    assert set(PROFILES["quick"].entries) == set(METHODS)
    assert PROFILES["quick"].tune is None and PROFILES["quick"].seeds == 3
    sweep = PROFILES["sparse-sweep"]
    assert sweep.label_fractions == (1.0, 0.3, 0.1, 0.03) and sweep.tune is not None
    assert BEST_EXPLICIT in sweep.entries and sweep.seeds == 3
    # Issue 13: the strong simple baselines are rows, biased MF a section, 16 trials per row.
    assert {"popularity", "none_ig_steps", "watched_positive"} <= set(sweep.entries)
    assert "biased_mf" in sweep.backbones and sweep.tune.trials >= 16


def test_profile_rejects_unknown_methods_backbones_and_train_options():
    base = PROFILES["tiny"]
    with pytest.raises(BenchmarkConfigError, match=r"unknown method\(s\) \['igg'\]"):
        base.replace(entries=("igg",))
    with pytest.raises(BenchmarkConfigError, match=r"unknown backbone\(s\) \['gmff'\]"):
        base.replace(backbones=("gmff",))
    with pytest.raises(BenchmarkConfigError, match="train settings: unknown TrainConfig"):
        base.replace(train={"epoch": 3})


def test_dataset_names_and_parsing(tmp_path, tiny_dataset):
    assert parse_dataset("synthetic") == DatasetSpec("synthetic")
    assert parse_dataset("synthetic:tiny").name == "synthetic-tiny"
    assert DatasetSpec("ml100k").with_label_fraction(0.3).name == "ml100k@lf0.3"
    assert parse_dataset(str(tiny_dataset)).name == "tiny"
    with pytest.raises(BenchmarkConfigError, match="no manifest.json at"):
        parse_dataset(str(tmp_path / "nothing"))
    with pytest.raises(BenchmarkConfigError, match="unknown synthetic preset 'huge'"):
        parse_dataset("synthetic:huge")
    with pytest.raises(BenchmarkConfigError, match="its label fraction cannot change"):
        DatasetSpec("path", path=str(tiny_dataset), label_fraction=0.5)


def test_label_fraction_reaches_the_build_config():
    config = DatasetSpec("synthetic", preset="tiny", label_fraction=0.1).build_config()
    assert config.split.label_fraction == 0.1 and config.dataset_name == "synthetic-tiny@lf0.1"


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


def test_watched_positive_is_left_out_only_where_there_are_no_observed_rows(tiny_dataset, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_dataset, bare)
    manifest = json.loads((bare / "manifest.json").read_text())
    manifest["counts"]["unclear"]["rows"] = 0
    (bare / "manifest.json").write_text(json.dumps(manifest))
    assert runs_on("watched_positive", tiny_dataset)
    assert not runs_on("watched_positive", bare)
    assert runs_on("ig", bare) and runs_on(BEST_EXPLICIT, bare)


def test_best_explicit_takes_the_given_loss_or_the_complement_likelihood():
    assert entry_method("ig", {}) == "ig"
    assert entry_method(BEST_EXPLICIT, {}) == "sl_complement"
    assert entry_method(BEST_EXPLICIT, {"method": "sl_focal"}) == "sl_focal"


def test_plan_runs_covers_rows_times_seeds_and_the_ratio_study(tmp_path):
    profile = Profile(
        name="t",
        description="",
        datasets=(DatasetSpec("synthetic", preset="tiny"),),
        backbones=("gmf", "mf"),
        entries=("ns", "ig"),
        seeds=2,
        ratio_study=(0.1, 10.0),  # 0.1 is IG's own ratio: not run twice
    )
    datasets = {"synthetic-tiny": (profile.datasets[0], tmp_path / "d")}
    configs = {
        ("synthetic-tiny", backbone, entry): {"method": entry, "backbone": backbone, "epochs": 2}
        for backbone in profile.backbones
        for entry in profile.entries
    }
    specs = plan_runs(profile, datasets, configs, tmp_path)
    keys = [spec.key for spec in specs]
    assert len(keys) == len(set(keys)) == 2 * 2 * 2 + 2 * 2
    assert "synthetic-tiny/mf/ig@ratio10/seed1" in keys
    ratio = next(spec for spec in specs if spec.key.endswith("ig@ratio10/seed1"))
    assert ratio.config.dual_lr_ratio == 10.0 and ratio.config.seed == 1
    assert ratio.tags == {"entry": "ig", "group": "ratio_study", "label_fraction": "1"}
    assert {spec.config.seed for spec in specs} == {0, 1}


# ------------------------------------------------------------------------------ running


def _spec(dataset: Path, out: Path, method: str, **changes) -> RunSpec:
    config = TrainConfig(method=method, **{**TINY_TRAIN, **changes})
    return RunSpec(
        key=f"tiny/gmf/{method}/seed{config.seed}",
        dataset=str(dataset),
        dataset_name="tiny",
        config=config,
        output_dir=str(out / method),
        tags={"entry": method, "group": "main"},
    )


@pytest.mark.ray
def test_a_failed_run_is_recorded_with_its_error_and_the_others_finish(
    ray_session, tiny_dataset, tmp_path
):
    tracker = Tracker("runs", tmp_path)
    specs = [
        _spec(tiny_dataset, tmp_path, "ig"),
        # A diverging learning rate: the trainer stops at the loss bound.
        _spec(tiny_dataset, tmp_path, "ns", lr=1e30),
    ]
    lines = []
    outcomes = execute_runs(specs, tracker, role="cell", progress=lines.append)
    good, bad = outcomes
    assert good.ok and 0 <= good.test["auc"] <= 1 and len(good.history) == good.epochs_run
    assert not bad.ok and bad.error.startswith("TrainingDiverged: training diverged at epoch 0")
    assert any("FAILED TrainingDiverged" in line for line in lines)
    assert len(lines) == 2

    mlflow.set_tracking_uri(tracker.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["runs"]).set_index("tags.run_key")
    assert runs.loc[good.spec.key, "status"] == "FINISHED"
    assert runs.loc[bad.spec.key, "status"] == "FAILED"
    assert runs.loc[bad.spec.key, "tags.error"] == bad.error
    assert runs.loc[good.spec.key, "metrics.test/auc"] == pytest.approx(good.test["auc"])
    assert runs.loc[good.spec.key, "params.method"] == "ig"
    artifacts = {a.path for a in tracker.client.list_artifacts(good.run_id)}
    assert {"model", "metrics.json", DIRECTION_LOG_FILE, "weight_histograms.json"} <= artifacts

    # A second invocation reuses the finished run (no retraining, no second MLflow run) and
    # retries the failed one.
    again = execute_runs(specs, tracker, role="cell", progress=lines.append)
    assert again[0].reused and again[0].run_id == good.run_id and again[0].test == good.test
    assert not again[1].ok and not again[1].reused
    assert len(mlflow.search_runs(experiment_names=["runs"])) == 3


def test_a_stored_outcome_is_reused_only_for_the_same_spec(tiny_dataset, tmp_path):
    spec = _spec(tiny_dataset, tmp_path, "ns")
    outcome = RunOutcome(spec=spec, status="ok", test={"auc": 0.6, "mrr": math.nan})
    Path(spec.output_dir).mkdir(parents=True)
    values = outcome.to_dict()
    values.pop("run_id")
    values["test"]["mrr"] = None  # as written: strict JSON, undefined metrics are null
    (Path(spec.output_dir) / "outcome.json").write_text(json.dumps(values))
    stored = finished_outcome(spec)
    assert stored.reused and stored.test["auc"] == 0.6 and math.isnan(stored.test["mrr"])
    changed = RunSpec(**{**vars(spec), "config": spec.config.replace(lr=0.5)})
    assert finished_outcome(changed) is None


def test_run_keys_must_be_unique(tiny_dataset, tmp_path):
    spec = _spec(tiny_dataset, tmp_path, "ns")
    with pytest.raises(ValueError, match="repeated"):
        execute_runs([spec, spec], None)


# ------------------------------------------------------------------------------ report


def _outcome(
    tmp_path: Path, entry: str, seed: int, test: dict, ok: bool = True, ratio: float = 0.1
) -> RunOutcome:
    group = "main" if ratio == 0.1 else "ratio_study"
    spec = RunSpec(
        key=f"d/gmf/{entry}@{ratio}/seed{seed}",
        dataset="unused",
        dataset_name="d",
        config=TrainConfig(
            method=entry if entry in METHODS else "sl", seed=seed, dual_lr_ratio=ratio
        ),
        output_dir=str(tmp_path / f"{entry}{ratio}" / str(seed)),
        tags={"entry": entry, "group": group},
    )
    if not ok:
        return RunOutcome(spec=spec, status="failed", error="TrainingDiverged: nan")
    return RunOutcome(spec=spec, status="ok", test=test)


def test_mean_std_is_the_sample_standard_deviation_and_skips_undefined_values():
    values = [0.61, 0.65, 0.58, math.nan]
    mean, std = report.mean_std(values)
    assert mean == pytest.approx(statistics.mean(values[:3]))
    assert std == pytest.approx(statistics.stdev(values[:3]))
    assert math.isnan(report.mean_std([0.5])[1])
    assert all(math.isnan(v) for v in report.mean_std([]))


def test_summary_rows_aggregate_seeds_and_keep_failures(tmp_path):
    outcomes = [
        _outcome(tmp_path, "ns", 0, {"auc": 0.60, "gauc": 0.55, "random_mrr": 0.8}),
        _outcome(tmp_path, "ns", 1, {"auc": 0.64, "gauc": 0.57, "random_mrr": 0.8}),
        _outcome(tmp_path, "ig", 0, {"auc": 0.70, "gauc": 0.60, "random_mrr": 0.8}),
        _outcome(tmp_path, "ig", 1, {}, ok=False),
        _outcome(tmp_path, "ig", 0, {"auc": 0.5}, ratio=10.0),  # the α/γ study: not a row
    ]
    rows = report.summarize(outcomes)
    assert [(row.entry, row.runs, row.ok) for row in rows] == [("ns", 2, 2), ("ig", 2, 1)]
    ns, ig = rows
    assert ns.mean["auc"] == pytest.approx(0.62)
    assert ns.std["auc"] == pytest.approx(statistics.stdev([0.60, 0.64]))
    assert ig.status == "1/2 failed: seed 1: TrainingDiverged: nan"

    markdown = report.results_markdown(rows, "T")
    assert "| GMF | NS | 0.6200 ± 0.0283 |" in markdown
    assert "| GMF | IG | **0.7000** |" in markdown  # one seed left: no std, best AUC in bold
    assert "1/2 ⚠ failed" in markdown and "seed 1: TrainingDiverged: nan" in markdown
    assert "Random-score floors on this test split: AUC 0.5, MRR 0.8000" in markdown

    csv_text = report.write_results_csv(rows, tmp_path / "results.csv").read_text()
    header, ns_line, ig_line = csv_text.strip().splitlines()
    assert header.startswith("dataset,backbone,method,label_fraction,runs,ok,auc_mean,auc_std")
    assert ns_line.startswith("d,GMF,NS,1.0,2,2,0.62,0.0282843")
    assert ig_line.endswith("1/2 failed: seed 1: TrainingDiverged: nan")
    runs_csv = report.write_runs_csv(outcomes, tmp_path / "runs.csv").read_text()
    assert len(runs_csv.strip().splitlines()) == 1 + len(outcomes)
    assert "failed" in runs_csv and "ratio_study" in runs_csv


def test_each_row_shows_its_gauc_lift_over_the_popularity_row(tmp_path):
    outcomes = [
        _outcome(tmp_path, "popularity", 0, {"auc": 0.65, "gauc": 0.60}),
        _outcome(tmp_path, "popularity", 1, {"auc": 0.65, "gauc": 0.62}),
        _outcome(tmp_path, "ns", 0, {"auc": 0.70, "gauc": 0.6525}),
        _outcome(tmp_path, "ig", 0, {"auc": 0.60, "gauc": 0.5900}),
    ]
    markdown = report.results_markdown(report.summarize(outcomes), "T")
    assert "| GAUC lift over Popularity | Runs |" in markdown
    assert "| GMF | Popularity | 0.6500 ± 0.0000 |" in markdown
    assert "| +0.0000 | 2/2 |" in markdown
    assert "| +0.0425 | 1/1 |" in markdown  # 0.6525 - mean(0.60, 0.62)
    assert "| -0.0200 | 1/1 |" in markdown


def test_a_table_without_a_popularity_row_has_no_lift_column(tmp_path):
    outcomes = [_outcome(tmp_path, "ns", 0, {"auc": 0.70, "gauc": 0.65})]
    markdown = report.results_markdown(report.summarize(outcomes), "T")
    assert "lift" not in markdown
    header, rule = [line for line in markdown.splitlines() if line.startswith("|")][:2]
    assert header.count("|") == rule.count("|")


def test_the_annotation_table_shows_the_annotation_auc_and_the_idl_weight_auc(tmp_path):
    annotation = {"observed_auc": 0.71, "observed_weight_auc": 0.70, "observed_accuracy": 0.6}
    outcomes = [_outcome(tmp_path, "ig", 0, annotation)]
    markdown = report.annotation_markdown(report.summarize(outcomes))
    assert "| observed auc | observed weight auc | observed accuracy |" in markdown
    assert "| d | GMF | IG | 0.7100 | 0.7000 | 0.6000 |" in markdown


def test_a_user_sample_estimate_is_marked_and_described_never_shown_as_the_full_ranking(
    tmp_path,
):
    sampled = {
        "auc": 0.7,
        "sampled_users_recall_at_20": 0.05,
        "sampled_users_recall_at_20_stderr": 0.004,
        "sampled_users_count": 127,
        "sampled_users_population": 37000,
    }
    outcomes = [
        _outcome(tmp_path, "ns", 0, {"auc": 0.6, "full_recall_at_20": 0.04}),
        _outcome(tmp_path, "ig", 0, sampled),
        _outcome(tmp_path, "ig", 1, {**sampled, "sampled_users_recall_at_20": 0.07}),
    ]
    ns, ig = report.summarize(outcomes)
    markdown = report.results_markdown([ns, ig], "T")
    assert "| 0.0400 |" in markdown  # the exact value, unmarked
    assert "| **0.0600 ± 0.0141** † |" in markdown
    assert "† GMF / IG: Recall@20 of the `sampled_users` protocol — 127 of 37000 test users" in (
        markdown
    )
    assert "standard error per run 0.0040" in markdown
    csv_text = report.write_results_csv([ns, ig], tmp_path / "results.csv").read_text()
    header, _, ig_line = csv_text.strip().splitlines()
    columns = dict(zip(header.split(","), ig_line.split(","), strict=True))
    assert columns["full_recall_at_20_mean"] == ""
    assert columns["sampled_users_recall_at_20_mean"] == "0.06"


def _write_direction_log(outcome: RunOutcome, generator: torch.Generator, steps: int = 12):
    directory = Path(outcome.spec.output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "direction_log": {
                "epoch": torch.arange(steps) // 4,
                "choice": torch.randint(0, len(CANDIDATES), (steps,), generator=generator),
                "losses": torch.rand(steps, len(CANDIDATES), generator=generator),
            },
            "weight_histograms": {
                epoch: torch.randint(0, 50, (20,), generator=generator).float()
                for epoch in range(3)
            },
        },
        directory / DIRECTION_LOG_FILE,
    )


def test_figures_are_written_as_png_from_run_outputs(tmp_path):
    generator = torch.Generator().manual_seed(0)
    outcomes = []
    for entry in ("idl", "ig"):
        for ratio in (0.1, 10.0) if entry == "ig" else (0.1,):
            for seed in (0, 1):
                test = {
                    "auc": 0.6 + 0.01 * seed,
                    "gauc": 0.55,
                    "sampled_accuracy": 0.7,
                    "sampled_precision": 0.5,
                    "sampled_recall": 0.4,
                    "sampled_true_positive_rate": 0.3,
                }
                outcome = _outcome(tmp_path, entry, seed, test, ratio=ratio)
                _write_direction_log(outcome, generator)
                outcomes.append(outcome)
    rows = report.summarize(outcomes)
    files = report.write_figures(outcomes, rows, tmp_path / "figures")
    names = sorted(path.name for path in files)
    assert names == [
        "annotation_d_gmf.png",
        "idl_weights_d_gmf.png",
        "ig_directions_d_gmf.png",
        "ratio_study_d_gmf.png",
    ]
    for path in files:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_label_fraction_figure_needs_several_fractions(tmp_path):
    rows = [
        report.SummaryRow(
            "s" if fraction == 1 else f"s@lf{fraction:g}",
            "gmf",
            entry,
            3,
            3,
            label_fraction=fraction,
        )
        for entry in ("ns", "idl", "ig")
        for fraction in (1.0, 0.1)
    ]
    for row in rows:
        for metric in report.TABLE_METRICS + report.ANNOTATION_METRICS:
            row.mean[metric], row.std[metric] = 0.5 + row.label_fraction / 10, 0.01
    files = report.plot_label_fraction(rows, tmp_path)
    assert [path.name for path in files] == ["label_fraction_s_gmf.png"]
    assert report.plot_label_fraction(rows[:1], tmp_path / "none") == []


def test_the_shipped_given_configs_are_valid():
    shipped = sorted((SPACES_DIR.parent / "pipelines" / "configs").glob("*.yaml"))
    assert shipped
    for path in shipped:
        assert load_given_configs(path).scopes, path


def test_the_report_describes_a_narrowed_profile_by_its_grid_not_its_canned_text():
    standard = PROFILES["standard"]
    assert benchmark._profile_line(standard).endswith(standard.description + ".")
    narrowed = standard.replace(tune=None, datasets=(DatasetSpec("ml100k"),), entries=("ig",))
    line = benchmark._profile_line(narrowed)
    assert "tuned" not in line and "ml100k" in line and "GMF, NeuMF; IG; 3 seed(s)" in line


def test_given_configs_default_is_empty():
    assert GivenConfigs().for_run("ig", "gmf") == {}
