"""Benchmark reports: paper-shaped tables (CSV + Markdown) and the paper's figures (PNG).

Tables (paper Tables 1–2): one row per (dataset, backbone, method) with the mean ± sample
standard deviation (ddof = 1) over seeds of the test metrics AUC, GAUC, NDCG@10, NDCG@20, MRR
(over each user's labeled test rows, paper protocol) and Recall@20 (full catalogue, training
items excluded — the BSL protocol, the one to read for ranking claims). A run that ranked only a
seeded sample of users (the ``sampled_users`` protocol, NeuMF on large catalogues) shows its
estimate marked † with the sample size and standard error under the table, never as the full
ranking; the CSVs keep the two in separate columns. Under each dataset the
random-score floors of that test split are printed: with ~80% positives a random scorer already
reaches NDCG@20 ≈ 0.87 (method.md §6). A row whose runs failed says so, with the error; it is
never dropped.

Figures (matplotlib ``Figure`` objects rendered straight to PNG: no pyplot, no display, no
global backend state):

* ``idl_weights_*.png`` — distributions of the IDL weights w¹ and w⁰ = 1 − w¹ on the diagnostic
  unlabeled rows at the first and the final epoch (paper Figures 4–5);
* ``ig_directions_*.png`` — IG's training-test loss per meta step, each point marked by the
  chosen direction (paper Figure 6);
* ``ratio_study_*.png`` — the same curve for α = 0.1, 1, 10, 50, 100 × γ, plus test AUC/GAUC
  and the share of each direction per ratio (paper Figure 7 and §4.5);
* ``annotation_*.png`` — how well each method's model labels sampled unlabeled items,
  against the synthetic data's planted truth;
* ``label_fraction_*.png`` — test AUC/GAUC (±1 std) and IDL/IG annotation precision/recall on
  observed-unlabeled rows against the share of training labels kept (issue 6).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from invlearn_ray.core.inverse_gradient import CANDIDATES
from invlearn_ray.core.methods import METHOD_SPECS
from invlearn_ray.core.metrics import display_name
from invlearn_ray.distributed.run_dir import read_direction_log
from invlearn_ray.distributed.runs import RunOutcome

TABLE_METRICS = ("auc", "gauc", "ndcg_at_10", "ndcg_at_20", "mrr", "full_recall_at_20")
SAMPLED_ESTIMATES = {"full_recall_at_20": "sampled_users_recall_at_20"}
"""Table metrics a run may hold only as a user-sample estimate, and that estimate's key."""
SAMPLE_METRICS = (
    "sampled_users_recall_at_20",
    "sampled_users_recall_at_20_stderr",
    "sampled_users_count",
    "sampled_users_population",
)
SAMPLED_MARK = "†"
FLOOR_METRICS = ("random_ndcg_at_10", "random_ndcg_at_20", "random_mrr")
BASE_RATE = "sampled_true_positive_rate"
"""Share of sampled unlabeled items that are truly positive: the annotation's base rate."""
ANNOTATION_METRICS = (
    "sampled_auc",
    "sampled_weight_auc",
    "sampled_accuracy",
    "sampled_precision",
    "sampled_recall",
    "observed_auc",
    "observed_weight_auc",
    "observed_accuracy",
    "observed_precision",
    "observed_recall",
)
"""The annotation as a ranking (AUC of the logits and, for IDL/IG, of the IDL weight w¹, against
the hidden labels) and thresholded at z = 0 (see ``core.evaluation.annotation_quality``)."""
LIFT_BASELINE = "popularity"
"""The entry every row's GAUC lift is measured against: the personalisation a method adds over
ranking each user's items by their smoothed labeled-positive rate (issue 13)."""
METHOD_NAMES = {
    **{name: spec.display_name for name, spec in METHOD_SPECS.items()},
    "best_explicit": "SL + explicit (best)",
}
"""Row names of the tables: every method's display name, and the benchmark's extra entry."""
BACKBONE_NAMES = {
    "mf": "MF",
    "gmf": "GMF",
    "biased_mf": "Biased MF",
    "neumf": "NeuMF",
    "lightgcn": "LightGCN",
}
DIRECTION_STYLE = {
    "none": ("tab:gray", "o"),
    "direct": ("tab:blue", "v"),
    "inverse": ("tab:red", "^"),
}

GROUP_MAIN = "main"
GROUP_RATIO = "ratio_study"


def metric_header(key: str) -> str:
    """``full_recall_at_20`` → ``Recall@20`` (full-catalogue metrics are named in the note)."""
    return display_name(key.removeprefix("full_"))


def method_name(entry: str) -> str:
    return METHOD_NAMES.get(entry, entry)


def backbone_name(backbone: str) -> str:
    return BACKBONE_NAMES.get(backbone, backbone)


# ------------------------------------------------------------------------------------------
# Aggregation
# ------------------------------------------------------------------------------------------


@dataclass
class SummaryRow:
    """One table row: a (dataset, backbone, method) over its seeds."""

    dataset: str
    backbone: str
    entry: str
    runs: int
    ok: int
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    methods_run: list[str] = field(default_factory=list)
    label_fraction: float = 1.0

    @property
    def status(self) -> str:
        if self.ok == self.runs:
            return "ok"
        return f"{self.runs - self.ok}/{self.runs} failed: {'; '.join(self.failures)}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1) of the finite values; NaN when undefined."""
    finite = [value for value in values if isinstance(value, int | float) and math.isfinite(value)]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, math.nan
    variance = sum((value - mean) ** 2 for value in finite) / (len(finite) - 1)
    return mean, math.sqrt(variance)


def summarize(
    outcomes: Sequence[RunOutcome],
    metrics: Sequence[str] = (
        TABLE_METRICS + ANNOTATION_METRICS + FLOOR_METRICS + SAMPLE_METRICS + (BASE_RATE,)
    ),
    group: str = GROUP_MAIN,
) -> list[SummaryRow]:
    """Aggregate the ``group`` runs by (dataset, backbone, entry), in first-seen order."""
    grouped: dict[tuple[str, str, str], list[RunOutcome]] = defaultdict(list)
    for outcome in outcomes:
        tags = outcome.spec.tags
        if tags.get("group", GROUP_MAIN) != group:
            continue
        key = (outcome.spec.dataset_name, outcome.spec.config.backbone, tags["entry"])
        grouped[key].append(outcome)
    rows = []
    for (dataset, backbone, entry), runs in grouped.items():
        ok = [run for run in runs if run.ok]
        row = SummaryRow(
            dataset=dataset,
            backbone=backbone,
            entry=entry,
            runs=len(runs),
            ok=len(ok),
            failures=[f"seed {run.spec.config.seed}: {run.error}" for run in runs if not run.ok],
            methods_run=sorted({run.spec.config.method for run in runs}),
            label_fraction=float(runs[0].spec.tags.get("label_fraction", 1.0)),
        )
        for metric in metrics:
            row.mean[metric], row.std[metric] = mean_std(
                [run.test.get(metric, math.nan) for run in ok]
            )
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------


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
            if row.entry == "best_explicit" and row.methods_run:
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


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def load_direction_log(outcome: RunOutcome) -> dict[str, Any] | None:
    """A run's direction log and weight histograms (``direction_log.pt``), or None."""
    if not outcome.ok:
        return None
    return read_direction_log(Path(outcome.spec.output_dir))


def _slug(*parts: str) -> str:
    text = "_".join(parts)
    return "".join(char if char.isalnum() or char in "-_." else "-" for char in text)


def _runs(
    outcomes: Sequence[RunOutcome], dataset: str, backbone: str, entry: str, group: str
) -> list[RunOutcome]:
    """The successful runs of one table row (or one ratio-study group)."""
    return [
        outcome
        for outcome in outcomes
        if outcome.ok
        and outcome.spec.dataset_name == dataset
        and outcome.spec.config.backbone == backbone
        and outcome.spec.tags.get("entry") == entry
        and outcome.spec.tags.get("group", GROUP_MAIN) == group
    ]


def _first_seed(runs: Sequence[RunOutcome]) -> RunOutcome | None:
    return min(runs, key=lambda outcome: outcome.spec.config.seed, default=None)


def plot_idl_weights(outcomes: Sequence[RunOutcome], directory: Path) -> list[Path]:
    """Figures 4–5: w¹ and w⁰ histograms at the first and the final epoch, IDL and IG."""
    written = []
    for dataset, backbone in _dataset_backbones(outcomes):
        runs = {
            entry: _first_seed(_runs(outcomes, dataset, backbone, entry, GROUP_MAIN))
            for entry in ("idl", "ig")
        }
        logs = {entry: load_direction_log(run) for entry, run in runs.items() if run is not None}
        logs = {entry: log for entry, log in logs.items() if log and log["weight_histograms"]}
        if not logs:
            continue
        figure = Figure(figsize=(5 * len(logs), 6))
        axes = figure.subplots(2, len(logs), squeeze=False)
        for column, (entry, log) in enumerate(logs.items()):
            histograms = log["weight_histograms"]
            epochs = sorted(histograms)
            for row, epoch in enumerate((epochs[0], epochs[-1])):
                counts = histograms[epoch].numpy()
                share = counts / max(counts.sum(), 1)
                edges = np.linspace(0.0, 1.0, len(counts) + 1)
                centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
                axis = axes[row][column]
                axis.bar(centers, share, width=width, alpha=0.6, label="w¹ (positive loss)")
                axis.bar(centers, share[::-1], width=width, alpha=0.6, label="w⁰ = 1 − w¹")
                stage = "first" if row == 0 else "final"
                axis.set_title(f"{method_name(entry)}: {stage} epoch ({epoch})")
                axis.set_xlabel("weight")
                axis.set_ylabel("share of unlabeled rows")
                axis.legend(fontsize=8)
        figure.suptitle(f"IDL weight distributions — {dataset}, {backbone_name(backbone)}")
        written.append(_save(figure, directory / f"{_slug('idl_weights', dataset, backbone)}.png"))
    return written


def _chosen_losses(log: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per meta step: the chosen candidate's training-test loss, the choice, and the epoch."""
    direction = log["direction_log"]
    choices = direction["choice"].long()
    losses = direction["losses"].reshape(-1, len(CANDIDATES))
    chosen = losses[torch.arange(len(choices)), choices]
    return chosen.numpy(), choices.numpy(), direction["epoch"].numpy()


def _plot_direction_curve(axis, log: dict[str, Any], title: str) -> None:
    chosen, choices, epochs = _chosen_losses(log)
    steps = np.arange(len(chosen))
    axis.plot(steps, chosen, color="black", linewidth=0.6, alpha=0.5)
    for index, name in enumerate(CANDIDATES):
        mask = choices == index
        if mask.any():
            color, marker = DIRECTION_STYLE[name]
            axis.scatter(steps[mask], chosen[mask], s=10, c=color, marker=marker, label=name)
    for boundary in np.flatnonzero(np.diff(epochs)) + 0.5:
        axis.axvline(boundary, color="lightgray", linewidth=0.5)
    axis.set_title(title)
    axis.set_xlabel("meta step (grey lines: epochs)")
    axis.set_ylabel("training-test loss")
    axis.legend(fontsize=8, title="direction")


def plot_ig_directions(outcomes: Sequence[RunOutcome], directory: Path) -> list[Path]:
    """Figure 6: IG's training-test loss per meta step, marked by the chosen direction."""
    written = []
    for dataset, backbone in _dataset_backbones(outcomes):
        run = _first_seed(_runs(outcomes, dataset, backbone, "ig", GROUP_MAIN))
        log = load_direction_log(run) if run else None
        if not log or not len(log["direction_log"]["choice"]):
            continue
        figure = Figure(figsize=(9, 4))
        axis = figure.subplots()
        ratio = run.spec.config.dual_lr_ratio
        _plot_direction_curve(
            axis, log, f"IG on {dataset}, {backbone_name(backbone)} (α = {ratio:g} γ, seed 0)"
        )
        written.append(
            _save(figure, directory / f"{_slug('ig_directions', dataset, backbone)}.png")
        )
    return written


def plot_ratio_study(outcomes: Sequence[RunOutcome], directory: Path) -> list[Path]:
    """Figure 7 and §4.5: the loss curve per α/γ, test AUC/GAUC and direction shares."""
    written = []
    for dataset, backbone in _dataset_backbones(outcomes):
        runs = _runs(outcomes, dataset, backbone, "ig", GROUP_MAIN)
        runs += _runs(outcomes, dataset, backbone, "ig", GROUP_RATIO)
        ratios = sorted({run.spec.config.dual_lr_ratio for run in runs})
        if len(ratios) < 2:
            continue
        by_ratio = {
            ratio: [r for r in runs if r.spec.config.dual_lr_ratio == ratio] for ratio in ratios
        }
        figure = Figure(figsize=(4 * len(ratios), 8))
        grid = figure.add_gridspec(2, len(ratios))
        for column, ratio in enumerate(ratios):
            axis = figure.add_subplot(grid[0, column])
            first = _first_seed(by_ratio[ratio])
            log = load_direction_log(first) if first else None
            if log and len(log["direction_log"]["choice"]):
                _plot_direction_curve(axis, log, f"α = {ratio:g} γ")
            else:
                axis.set_title(f"α = {ratio:g} γ: no run")
        scores = figure.add_subplot(grid[1, : max(1, len(ratios) // 2)])
        for metric in ("auc", "gauc"):
            stats = [mean_std([r.test.get(metric, math.nan) for r in by_ratio[q]]) for q in ratios]
            scores.errorbar(
                ratios,
                [s[0] for s in stats],
                yerr=[_zero_nan(s[1]) for s in stats],
                marker="o",
                capsize=3,
                label=f"test {display_name(metric)}",
            )
        scores.set_xscale("log")
        scores.set_xlabel("α / γ")
        scores.set_ylabel("test score (mean ± std over seeds)")
        scores.legend()
        shares_axis = figure.add_subplot(grid[1, max(1, len(ratios) // 2) :])
        shares = _direction_shares(by_ratio, ratios)
        bottom = np.zeros(len(ratios))
        labels = [f"{ratio:g}" for ratio in ratios]
        for index, name in enumerate(CANDIDATES):
            shares_axis.bar(
                labels, shares[:, index], bottom=bottom, color=DIRECTION_STYLE[name][0], label=name
            )
            bottom += shares[:, index]
        shares_axis.set_xlabel("α / γ")
        shares_axis.set_ylabel("share of meta steps")
        shares_axis.legend(title="direction", fontsize=8)
        figure.suptitle(f"α/γ study — IG on {dataset}, {backbone_name(backbone)}")
        written.append(_save(figure, directory / f"{_slug('ratio_study', dataset, backbone)}.png"))
    return written


def _zero_nan(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _direction_shares(by_ratio: dict[float, list[RunOutcome]], ratios: list[float]) -> np.ndarray:
    shares = np.zeros((len(ratios), len(CANDIDATES)))
    for row, ratio in enumerate(ratios):
        counts = np.zeros(len(CANDIDATES))
        for run in by_ratio[ratio]:
            log = load_direction_log(run)
            if log is not None:
                choices = log["direction_log"]["choice"].long()
                counts += torch.bincount(choices, minlength=len(CANDIDATES)).numpy()
        shares[row] = counts / max(counts.sum(), 1)
    return shares


def plot_annotation(rows: Sequence[SummaryRow], directory: Path) -> list[Path]:
    """Annotation AUC / accuracy / precision / recall on sampled unlabeled rows (planted truth)."""
    written = []
    metrics = ("sampled_auc", "sampled_accuracy", "sampled_precision", "sampled_recall")
    for dataset, backbone in dict.fromkeys((row.dataset, row.backbone) for row in rows):
        section = [
            r
            for r in rows
            if r.dataset == dataset
            and r.backbone == backbone
            and math.isfinite(r.mean["sampled_accuracy"])
        ]
        if not section:
            continue
        figure = Figure(figsize=(max(6, 0.9 * len(section)), 4))
        axis = figure.subplots()
        positions = np.arange(len(section))
        width = 0.8 / len(metrics)
        for index, metric in enumerate(metrics):
            axis.bar(
                positions + (index - (len(metrics) - 1) / 2) * width,
                [_zero_nan(r.mean[metric]) for r in section],
                width=width,
                yerr=[_zero_nan(r.std[metric]) for r in section],
                capsize=2,
                label=metric.removeprefix("sampled_"),
            )
        base_rate = section[0].mean.get(BASE_RATE, math.nan)
        if math.isfinite(base_rate):
            axis.axhline(
                base_rate,
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"truly positive share ({base_rate:.2f})",
            )
        axis.set_xticks(positions, [method_name(r.entry) for r in section], rotation=30, ha="right")
        axis.set_ylim(0, 1)
        axis.set_ylabel("share (mean ± std over seeds)")
        axis.set_title(
            f"Annotation of sampled unlabeled items vs planted truth — {dataset}, "
            f"{backbone_name(backbone)}"
        )
        axis.legend(fontsize=8)
        written.append(_save(figure, directory / f"{_slug('annotation', dataset, backbone)}.png"))
    return written


def plot_label_fraction(rows: Sequence[SummaryRow], directory: Path) -> list[Path]:
    """Issue 6: test AUC/GAUC and IDL/IG observed-row annotation (AUC, precision, recall) vs
    label fraction."""
    written = []
    families = defaultdict(list)
    for row in rows:
        families[(_family(row.dataset), row.backbone)].append(row)
    for (family, backbone), section in families.items():
        fractions = sorted({row.label_fraction for row in section})
        if len(fractions) < 2:
            continue
        figure = Figure(figsize=(16, 4.5))
        axes = figure.subplots(1, 3)
        for axis, metric in zip(axes[:2], ("auc", "gauc"), strict=True):
            for entry in dict.fromkeys(row.entry for row in section):
                points = sorted((r.label_fraction, r) for r in section if r.entry == entry)
                axis.errorbar(
                    [fraction for fraction, _ in points],
                    [r.mean[metric] for _, r in points],
                    yerr=[_zero_nan(r.std[metric]) for _, r in points],
                    marker="o",
                    capsize=3,
                    label=method_name(entry),
                )
            axis.set_xscale("log")
            axis.set_xlabel("label fraction kept")
            axis.set_ylabel(f"test {display_name(metric)} (±1 std)")
            axis.legend(fontsize=7)
        axis = axes[2]
        for entry in ("idl", "ig"):
            points = sorted((r.label_fraction, r) for r in section if r.entry == entry)
            for metric, style in (
                ("observed_auc", ":"),
                ("observed_precision", "-"),
                ("observed_recall", "--"),
            ):
                axis.errorbar(
                    [fraction for fraction, _ in points],
                    [r.mean[metric] for _, r in points],
                    yerr=[_zero_nan(r.std[metric]) for _, r in points],
                    linestyle=style,
                    marker="o",
                    capsize=3,
                    label=f"{method_name(entry)} {metric.removeprefix('observed_')}",
                )
        axis.set_xscale("log")
        axis.set_xlabel("label fraction kept")
        axis.set_ylabel("annotation of observed-unlabeled rows")
        axis.legend(fontsize=7)
        figure.suptitle(f"Label fraction sweep — {family}, {backbone_name(backbone)}")
        written.append(
            _save(figure, directory / f"{_slug('label_fraction', family, backbone)}.png")
        )
    return written


def _family(dataset: str) -> str:
    """``synthetic@lf0.3`` → ``synthetic``: datasets that differ only in label fraction."""
    return dataset.split("@lf")[0]


def _dataset_backbones(outcomes: Sequence[RunOutcome]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((o.spec.dataset_name, o.spec.config.backbone) for o in outcomes))


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def write_figures(
    outcomes: Sequence[RunOutcome], rows: Sequence[SummaryRow], directory: Path
) -> list[Path]:
    """Every figure the runs allow (a figure whose runs are missing or failed is skipped)."""
    directory.mkdir(parents=True, exist_ok=True)
    return (
        plot_idl_weights(outcomes, directory)
        + plot_ig_directions(outcomes, directory)
        + plot_ratio_study(outcomes, directory)
        + plot_annotation(rows, directory)
        + plot_label_fraction(rows, directory)
    )
