"""The benchmark's tables: paper-shaped CSV and Markdown (paper Tables 1–2), and annotation.

One row per (dataset, backbone, method) with the mean ± sample standard deviation (ddof = 1)
over seeds of the test metrics AUC, GAUC, NDCG@10, NDCG@20, MRR (over each user's labeled test
rows, paper protocol) and Recall@20 (full catalogue, training items excluded — the BSL protocol,
the one to read for ranking claims). A run that ranked only a seeded sample of users (the
``sampled_users`` protocol, NeuMF on large catalogues) shows its estimate marked † with the
sample size and standard error under the table, never as the full ranking; the CSVs keep the two
in separate columns. Under each dataset the random-score floors of that test split are printed:
with ~80% positives a random scorer already reaches NDCG@20 ≈ 0.87 (method.md §6). A row whose
runs failed says so, with the error; it is never dropped.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from invlearn_ray.evaluation.metrics import display_name
from invlearn_ray.experiments.benchmark.entries import (
    BEST_EXPLICIT,
    GROUP_MAIN,
    GROUP_RATIO,
    backbone_name,
    method_name,
)
from invlearn_ray.experiments.benchmark.summary import (
    ANNOTATION_METRICS,
    FLOOR_METRICS,
    SAMPLE_METRICS,
    SAMPLED_ESTIMATES,
    TABLE_METRICS,
    SummaryRow,
    mean_std,
)
from invlearn_ray.experiments.runs import RunOutcome

SAMPLED_MARK = "†"
LIFT_BASELINE = "popularity"
"""The entry every row's GAUC lift is measured against: the personalisation a method adds over
ranking each user's items by their smoothed labeled-positive rate (issue 13)."""


def metric_header(key: str) -> str:
    """``full_recall_at_20`` → ``Recall@20`` (full-catalogue metrics are named in the note)."""
    return display_name(key.removeprefix("full_"))


def write_runs_csv(outcomes: Sequence[RunOutcome], path: Path) -> Path:
    """Every run (seed) on its own line: what ran, whether it failed, and its test metrics."""
    metrics = TABLE_METRICS + ANNOTATION_METRICS + SAMPLE_METRICS
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["key", "dataset", "backbone", "entry", "method", "group", "seed", "status"]
            + [f"test_{metric}" for metric in metrics]
            + ["best_epoch", "epochs_run", "seconds", "error"]
        )
        for outcome in outcomes:
            spec = outcome.spec
            writer.writerow(
                [
                    spec.key,
                    spec.dataset_name,
                    spec.config.backbone,
                    spec.tags.get("entry", spec.config.method),
                    spec.config.method,
                    spec.tags.get("group", GROUP_MAIN),
                    spec.config.seed,
                    outcome.status,
                ]
                + [_csv_number(outcome.test.get(metric)) for metric in metrics]
                + [outcome.best_epoch, outcome.epochs_run, f"{outcome.seconds:.2f}"]
                + [outcome.error or ""]
            )
    return path


def write_results_csv(rows: Sequence[SummaryRow], path: Path) -> Path:
    """The summary table, machine-readable: mean and std in separate columns."""
    metrics = TABLE_METRICS + ANNOTATION_METRICS + SAMPLE_METRICS
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["dataset", "backbone", "method", "label_fraction", "runs", "ok"]
            + [f"{metric}_{stat}" for metric in metrics for stat in ("mean", "std")]
            + ["methods_run", "status"]
        )
        for row in rows:
            writer.writerow(
                [row.dataset, backbone_name(row.backbone), method_name(row.entry)]
                + [row.label_fraction, row.runs, row.ok]
                + [
                    _csv_number(values[metric])
                    for metric in metrics
                    for values in (row.mean, row.std)
                ]
                + ["+".join(row.methods_run), row.status]
            )
    return path


def _csv_number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _cell(mean: float, std: float, bold: bool) -> str:
    if not math.isfinite(mean):
        return "—"
    text = f"{mean:.4f}" if not math.isfinite(std) else f"{mean:.4f} ± {std:.4f}"
    return f"**{text}**" if bold else text


def results_markdown(rows: Sequence[SummaryRow], title: str, notes: Sequence[str] = ()) -> str:
    """The paper-shaped Markdown table: a section per dataset, rows by backbone and method,
    the best mean of each column per (dataset, backbone) in bold, failures spelled out.

    When the section has a ``popularity`` row, a last column gives each row's GAUC lift over it
    (difference of the means; the same backbone's popularity row, else the dataset's first):
    what the method adds beyond item popularity, which alone ranks each user's items well.
    """
    lines = [f"# {title}", ""]
    lines += [f"{note}" for note in notes]
    if notes:
        lines.append("")
    headers = [metric_header(metric) for metric in TABLE_METRICS]
    for dataset in dict.fromkeys(row.dataset for row in rows):
        section = [row for row in rows if row.dataset == dataset]
        lines += [f"## {dataset}", ""]
        lines.append("| Backbone | Method | " + " | ".join(headers) + " | Runs |")
        lines.append("|---|---|" + "---|" * len(headers) + "---|")
        best = _best_means(section)
        lift_base = _lift_baselines(section)
        if lift_base:
            lines[-2] = lines[-2].removesuffix(" Runs |") + " GAUC lift over Popularity | Runs |"
            lines[-1] += "---|"
        for row in section:
            cells = []
            for metric in TABLE_METRICS:
                mean, std, sampled = _table_value(row, metric)
                cell = _cell(mean, std, mean == best.get((row.backbone, metric)))
                cells.append(cell + (f" {SAMPLED_MARK}" if sampled else ""))
            name = method_name(row.entry)
            if row.entry == BEST_EXPLICIT and row.methods_run:
                # The row is whichever explicit-negative loss tuned best: name it.
                chosen = ", ".join(method_name(m) for m in row.methods_run)
                name = f"Best explicit-negative: {chosen}"
            runs = f"{row.ok}/{row.runs}" + ("" if row.ok == row.runs else " ⚠ failed")
            if lift_base:
                cells.append(_lift_cell(row, lift_base))
            lines.append(f"| {backbone_name(row.backbone)} | {name} | " + " | ".join(cells))
            lines[-1] += f" | {runs} |"
        floors = _floors(section)
        if floors:
            lines += ["", f"Random-score floors on this test split: {floors}."]
        lines += _sample_notes(section)
        failures = [
            f"* {backbone_name(row.backbone)} / {method_name(row.entry)}: {failure}"
            for row in section
            for failure in row.failures
        ]
        if failures:
            lines += ["", "Failed runs:", "", *failures]
        lines.append("")
    return "\n".join(lines)


RATIO_METRICS = ("auc", "gauc", "ndcg_at_10", "mrr", "full_recall_at_20")
"""The α/γ study table's columns."""


def ratio_study_markdown(outcomes: Sequence[RunOutcome]) -> str:
    """IG's α/γ study (paper Figure 7 and §4.5) as a table: one row per ratio α/γ — the IG
    row's own runs and the study's — with the test metrics' mean ± sample std over seeds; ""
    when the benchmark ran no study."""
    ig_runs = [
        outcome
        for outcome in outcomes
        if outcome.spec.tags.get("entry") == "ig"
        and outcome.spec.tags.get("group", GROUP_MAIN) in (GROUP_MAIN, GROUP_RATIO)
    ]
    if not any(o.spec.tags.get("group") == GROUP_RATIO for o in ig_runs):
        return ""
    lines = [
        "## IG's α/γ study",
        "",
        "IG at other ratios α/γ of the dual-loss step α to the test step γ (paper Figure 7; "
        "`figures/ratio_study_*.png` adds the directions chosen). Test metrics, mean ± sample "
        "std over seeds; the row marked * is the IG row of the table above.",
    ]
    sections = dict.fromkeys((o.spec.dataset_name, o.spec.config.backbone) for o in ig_runs)
    for dataset, backbone in sections:
        runs = [
            o
            for o in ig_runs
            if o.spec.dataset_name == dataset and o.spec.config.backbone == backbone
        ]
        headers = [metric_header(metric) for metric in RATIO_METRICS]
        lines += [
            "",
            f"### {dataset}, {backbone_name(backbone)}",
            "",
            "| α/γ | " + " | ".join(headers) + " | Runs |",
            "|---|" + "---|" * len(headers) + "---|",
        ]
        for ratio in sorted({o.spec.config.dual_lr_ratio for o in runs}):
            at_ratio = [o for o in runs if o.spec.config.dual_lr_ratio == ratio]
            ok = [o for o in at_ratio if o.ok]
            cells = []
            for metric in RATIO_METRICS:
                mean, std = mean_std([o.test.get(metric, math.nan) for o in ok])
                cells.append(_cell(mean, std, False))
            main = any(o.spec.tags.get("group", GROUP_MAIN) == GROUP_MAIN for o in at_ratio)
            own = "*" if main else ""
            runs_cell = f"{len(ok)}/{len(at_ratio)}" + ("" if len(ok) == len(at_ratio) else " ⚠")
            lines.append(f"| {ratio:g}{own} | " + " | ".join(cells) + f" | {runs_cell} |")
    return "\n".join(lines) + "\n"


def _lift_baselines(rows: Sequence[SummaryRow]) -> dict[str, float]:
    """Popularity's mean GAUC per backbone of a section ("" = the section's first), or {}."""
    means = {
        row.backbone: row.mean.get("gauc", math.nan) for row in rows if row.entry == LIFT_BASELINE
    }
    means = {backbone: mean for backbone, mean in means.items() if math.isfinite(mean)}
    if means:
        means[""] = next(iter(means.values()))
    return means


def _lift_cell(row: SummaryRow, baselines: dict[str, float]) -> str:
    base = baselines.get(row.backbone, baselines[""])
    lift = row.mean.get("gauc", math.nan) - base
    return f"{lift:+.4f}" if math.isfinite(lift) else "—"


def _table_value(row: SummaryRow, metric: str) -> tuple[float, float, bool]:
    """Mean, std and whether the cell is a user-sample estimate (the run had no full value)."""
    estimate = SAMPLED_ESTIMATES.get(metric)
    if estimate is None or math.isfinite(row.mean[metric]):
        return row.mean[metric], row.std[metric], False
    mean = row.mean.get(estimate, math.nan)
    return mean, row.std.get(estimate, math.nan), math.isfinite(mean)


def _sample_notes(rows: Sequence[SummaryRow]) -> list[str]:
    """One line per row whose ranking metric is a user-sample estimate: what was sampled."""
    notes = []
    for row in rows:
        if not any(_table_value(row, metric)[2] for metric in SAMPLED_ESTIMATES):
            continue
        notes.append(
            f"{SAMPLED_MARK} {backbone_name(row.backbone)} / {method_name(row.entry)}: Recall@20 "
            f"of the `sampled_users` protocol — {row.mean['sampled_users_count']:.0f} of "
            f"{row.mean['sampled_users_population']:.0f} test users, drawn once (seeded) and "
            "each ranked against the whole catalogue: an unbiased estimate of the full ranking's "
            f"mean, not the full ranking (standard error per run "
            f"{row.mean['sampled_users_recall_at_20_stderr']:.4f})."
        )
    return ["", *notes] if notes else []


def _best_means(rows: Sequence[SummaryRow]) -> dict[tuple[str, str], float]:
    best: dict[tuple[str, str], float] = {}
    for row in rows:
        for metric in TABLE_METRICS:
            value = _table_value(row, metric)[0]
            if math.isfinite(value) and value > best.get((row.backbone, metric), -math.inf):
                best[(row.backbone, metric)] = value
    return best


def _floors(rows: Sequence[SummaryRow]) -> str:
    parts = ["AUC 0.5"]
    for metric in FLOOR_METRICS:
        values = [row.mean.get(metric, math.nan) for row in rows]
        values = [value for value in values if math.isfinite(value)]
        if values:
            parts.append(f"{metric_header(metric.removeprefix('random_'))} {values[0]:.4f}")
    return ", ".join(parts) if len(parts) > 1 else ""


def annotation_markdown(rows: Sequence[SummaryRow]) -> str:
    """How each method's model labels unlabeled rows against the hidden truth: as a ranking
    (AUC of the logits, and of the IDL weight w¹ for IDL/IG) and thresholded (1[z > 0])."""
    metrics = [m for m in ANNOTATION_METRICS if any(math.isfinite(r.mean[m]) for r in rows)]
    if not metrics:
        return ""
    lines = [
        "# Annotation of unlabeled rows",
        "",
        "The model's score (auc), its IDL weight w¹ (weight auc, IDL/IG) and its label "
        "1[z > 0] (accuracy, precision, recall) on held-out unlabeled rows against their hidden "
        "truth: "
        "*sampled* = non-interacted items (planted truth, synthetic data only), *observed* = "
        "unclear or label-fraction-hidden interactions.",
        "",
        "| Dataset | Backbone | Method | "
        + " | ".join(m.replace("_", " ") for m in metrics)
        + " |",
        "|---|---|---|" + "---|" * len(metrics),
    ]
    for row in rows:
        cells = [_cell(row.mean[m], row.std[m], False) for m in metrics]
        lines.append(
            f"| {row.dataset} | {backbone_name(row.backbone)} | {method_name(row.entry)} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"
