"""The tables: seeds aggregated, failures kept and spelled out, CSV and Markdown."""

from __future__ import annotations

import statistics

import pytest

from invlearn_ray.experiments.benchmark import tables
from invlearn_ray.experiments.benchmark.summary import summarize


def test_summary_rows_aggregate_seeds_and_keep_failures(tmp_path, make_outcome):
    outcomes = [
        make_outcome("ns", 0, {"auc": 0.60, "gauc": 0.55, "random_mrr": 0.8}),
        make_outcome("ns", 1, {"auc": 0.64, "gauc": 0.57, "random_mrr": 0.8}),
        make_outcome("ig", 0, {"auc": 0.70, "gauc": 0.60, "random_mrr": 0.8}),
        make_outcome("ig", 1, {}, ok=False),
        make_outcome("ig", 0, {"auc": 0.5}, ratio=10.0),  # the α/γ study: not a row
    ]
    rows = summarize(outcomes)
    assert [(row.entry, row.runs, row.ok) for row in rows] == [("ns", 2, 2), ("ig", 2, 1)]
    ns, ig = rows
    assert ns.mean["auc"] == pytest.approx(0.62)
    assert ns.std["auc"] == pytest.approx(statistics.stdev([0.60, 0.64]))
    assert ig.status == "1/2 failed: seed 1: TrainingDiverged: nan"

    markdown = tables.results_markdown(rows, "T")
    assert "| GMF | NS | 0.6200 ± 0.0283 |" in markdown
    assert "| GMF | IG | **0.7000** |" in markdown  # one seed left: no std, best AUC in bold
    assert "1/2 ⚠ failed" in markdown and "seed 1: TrainingDiverged: nan" in markdown
    assert "Random-score floors on this test split: AUC 0.5, MRR 0.8000" in markdown

    csv_text = tables.write_results_csv(rows, tmp_path / "results.csv").read_text()
    header, ns_line, ig_line = csv_text.strip().splitlines()
    assert header.startswith("dataset,backbone,method,label_fraction,runs,ok,auc_mean,auc_std")
    assert ns_line.startswith("d,GMF,NS,1.0,2,2,0.62,0.0282843")
    assert ig_line.endswith("1/2 failed: seed 1: TrainingDiverged: nan")
    runs_csv = tables.write_runs_csv(outcomes, tmp_path / "runs.csv").read_text()
    assert len(runs_csv.strip().splitlines()) == 1 + len(outcomes)
    assert "failed" in runs_csv and "ratio_study" in runs_csv


def test_a_user_sample_estimate_is_marked_and_described_never_shown_as_the_full_ranking(
    tmp_path, make_outcome
):
    sampled = {
        "auc": 0.7,
        "sampled_users_recall_at_20": 0.05,
        "sampled_users_recall_at_20_stderr": 0.004,
        "sampled_users_count": 127,
        "sampled_users_population": 37000,
    }
    outcomes = [
        make_outcome("ns", 0, {"auc": 0.6, "full_recall_at_20": 0.04}),
        make_outcome("ig", 0, sampled),
        make_outcome("ig", 1, {**sampled, "sampled_users_recall_at_20": 0.07}),
    ]
    ns, ig = summarize(outcomes)
    markdown = tables.results_markdown([ns, ig], "T")
    assert "| 0.0400 |" in markdown  # the exact value, unmarked
    assert "| **0.0600 ± 0.0141** † |" in markdown
    assert "† GMF / IG: Recall@20 of the `sampled_users` protocol — 127 of 37000 test users" in (
        markdown
    )
    assert "standard error per run 0.0040" in markdown
    csv_text = tables.write_results_csv([ns, ig], tmp_path / "results.csv").read_text()
    header, _, ig_line = csv_text.strip().splitlines()
    columns = dict(zip(header.split(","), ig_line.split(","), strict=True))
    assert columns["full_recall_at_20_mean"] == ""
    assert columns["sampled_users_recall_at_20_mean"] == "0.06"


def test_each_row_shows_its_gauc_lift_over_the_popularity_row(make_outcome):
    outcomes = [
        make_outcome("popularity", 0, {"auc": 0.65, "gauc": 0.60}),
        make_outcome("popularity", 1, {"auc": 0.65, "gauc": 0.62}),
        make_outcome("ns", 0, {"auc": 0.70, "gauc": 0.6525}),
        make_outcome("ig", 0, {"auc": 0.60, "gauc": 0.5900}),
    ]
    markdown = tables.results_markdown(summarize(outcomes), "T")
    assert "| GAUC lift over Popularity | Runs |" in markdown
    assert "| GMF | Popularity | 0.6500 |" in markdown  # no seed: no ± over repeated runs
    assert "| +0.0000 | 2/2 |" in markdown
    assert "| +0.0425 | 1/1 |" in markdown  # 0.6525 - mean(0.60, 0.62)
    assert "| -0.0200 | 1/1 |" in markdown


def test_a_table_without_a_popularity_row_has_no_lift_column(make_outcome):
    outcomes = [make_outcome("ns", 0, {"auc": 0.70, "gauc": 0.65})]
    markdown = tables.results_markdown(summarize(outcomes), "T")
    assert "lift" not in markdown
    header, rule = [line for line in markdown.splitlines() if line.startswith("|")][:2]
    assert header.count("|") == rule.count("|")


def test_the_annotation_table_shows_the_annotation_auc_and_the_idl_weight_auc(make_outcome):
    annotation = {"observed_auc": 0.71, "observed_weight_auc": 0.70, "observed_accuracy": 0.6}
    outcomes = [make_outcome("ig", 0, annotation)]
    markdown = tables.annotation_markdown(summarize(outcomes))
    assert "| observed auc | observed weight auc | observed accuracy |" in markdown
    assert "| d | GMF | IG | 0.7100 | 0.7000 | 0.6000 |" in markdown


def test_the_alpha_gamma_study_is_a_table_with_ig_own_ratio_marked(make_outcome):
    outcomes = [
        make_outcome("ig", 0, {"auc": 0.64, "gauc": 0.60}),
        make_outcome("ig", 1, {"auc": 0.66, "gauc": 0.60}),
        make_outcome("ig", 0, {"auc": 0.55, "gauc": 0.51}, ratio=10.0),
        make_outcome("ig", 1, {}, ok=False, ratio=10.0),
        make_outcome("ns", 0, {"auc": 0.70, "gauc": 0.65}),
    ]
    markdown = tables.ratio_study_markdown(outcomes)
    assert "### d, GMF" in markdown
    assert "| 0.1* | 0.6500 ± 0.0141 | 0.6000 ± 0.0000 |" in markdown
    assert "| 10 | 0.5500 | 0.5100 |" in markdown and "| 1/2 ⚠ |" in markdown
    assert tables.ratio_study_markdown(outcomes[:2]) == ""  # no study, no table
