"""The benchmark's figures: the paper's, and annotation and label-fraction plots (PNG).

Matplotlib ``Figure`` objects rendered straight to PNG: no pyplot, no display, no global backend
state. A figure whose runs are missing or failed is skipped.

* ``idl_weights_*.png`` — the distribution of the IDL weight w¹ (of the positive loss; w⁰ = 1 − w¹
  is its mirror image, so it is not drawn) on the diagnostic unlabeled rows at the first and the
  final epoch, for IDL and for IG (paper Figures 4–5);
* ``ig_directions_*.png`` — IG's training-test loss per meta step, each point marked by the
  chosen direction (paper Figure 6);
* ``ratio_study_*.png`` — the same curve for α = 0.1, 1, 10, 50, 100 × γ, plus test AUC/GAUC
  and the share of each direction per ratio (paper Figure 7 and §4.5);
* ``annotation_*.png`` — how well each method's model labels sampled unlabeled items,
  against the synthetic data's planted truth: the AUC of its scores, and accuracy, precision
  and recall of its labels 1[z > 0];
* ``label_fraction_*.png`` — test AUC/GAUC (±1 std) and IDL/IG annotation precision/recall on
  observed-unlabeled rows against the share of training labels kept (issue 6).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from invlearn_ray.evaluation.metrics import display_name
from invlearn_ray.experiments.benchmark.entries import (
    GROUP_MAIN,
    GROUP_RATIO,
    backbone_name,
    method_name,
)
from invlearn_ray.experiments.benchmark.summary import BASE_RATE, SummaryRow, mean_std
from invlearn_ray.experiments.runs import RunOutcome
from invlearn_ray.methods.inverse_gradient import CANDIDATES
from invlearn_ray.training.run_folder import read_direction_log

DIRECTION_STYLE = {
    "none": ("tab:gray", "o"),
    "direct": ("tab:blue", "v"),
    "inverse": ("tab:red", "^"),
}
FONT_SIZES = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.title_fontsize": 10,
    "figure.titlesize": 13,
}
"""Every figure's text sizes: read at 110 dpi, Matplotlib's defaults (10 pt, 8 pt legends) were
too small in the wide multi-panel figures."""


def load_direction_log(outcome: RunOutcome) -> dict[str, Any] | None:
    """A run's direction log and weight histograms (``direction_log.pt``), or None."""
    if not outcome.ok:
        return None
    return read_direction_log(outcome.spec.output_dir)


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
    """Figures 4–5: w¹ histograms at the first and the final epoch, IDL and IG (w⁰ = 1 − w¹ is
    its mirror image: drawing both put two copies of one distribution on every panel)."""
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
        figure = Figure(figsize=(6 * len(logs), 7))
        axes = figure.subplots(2, len(logs), squeeze=False, sharey="row")
        for column, (entry, log) in enumerate(logs.items()):
            histograms = log["weight_histograms"]
            epochs = sorted(histograms)
            for row, epoch in enumerate((epochs[0], epochs[-1])):
                counts = histograms[epoch].numpy()
                share = counts / max(counts.sum(), 1)
                edges = np.linspace(0.0, 1.0, len(counts) + 1)
                centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
                axis = axes[row][column]
                axis.bar(centers, share, width=width, color="tab:blue", edgecolor="white")
                stage = "first" if row == 0 else "final"
                axis.set_title(f"{method_name(entry)}: {stage} epoch ({epoch})")
                axis.set_xlim(0, 1)
                axis.set_xlabel("w¹, the weight of the positive loss (w⁰ = 1 − w¹)")
                if column == 0:
                    axis.set_ylabel("share of unlabeled rows")
        methods = " and ".join(method_name(entry) for entry in logs)
        figure.suptitle(
            f"Inverse dual loss weight w¹ on unlabeled rows — {methods}, {dataset}, "
            f"{backbone_name(backbone)}"
        )
        written.append(_save(figure, directory / f"{_slug('idl_weights', dataset, backbone)}.png"))
    return written


def _chosen_losses(log: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per meta step: the chosen candidate's training-test loss, the choice, and the epoch."""
    direction = log["direction_log"]
    choices = direction["choice"].long()
    losses = direction["losses"].reshape(-1, len(CANDIDATES))
    chosen = losses[torch.arange(len(choices)), choices]
    return chosen.numpy(), choices.numpy(), direction["epoch"].numpy()


def _plot_direction_curve(axis, log: dict[str, Any], title: str, legend: bool = True) -> None:
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
    if legend:
        axis.legend(title="direction")


def _direction_legend(figure: Figure) -> None:
    """One legend for every panel of a figure: each direction's colour and marker."""
    handles = [
        Line2D([], [], color=color, marker=marker, linestyle="none", markersize=8)
        for color, marker in DIRECTION_STYLE.values()
    ]
    figure.legend(
        handles,
        list(DIRECTION_STYLE),
        title="direction chosen",
        loc="outside right upper",
    )


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
        figure = Figure(figsize=(4.4 * len(ratios), 9), layout="constrained")
        grid = figure.add_gridspec(2, len(ratios))
        first_axis = None
        for column, ratio in enumerate(ratios):
            # One loss scale for every ratio: the panels are compared with each other.
            axis = figure.add_subplot(grid[0, column], sharey=first_axis)
            first_axis = first_axis or axis
            first = _first_seed(by_ratio[ratio])
            log = load_direction_log(first) if first else None
            if log and len(log["direction_log"]["choice"]):
                _plot_direction_curve(axis, log, f"α = {ratio:g} γ", legend=False)
            else:
                axis.set_title(f"α = {ratio:g} γ: no run")
            if column:
                axis.set_ylabel("")
                axis.tick_params(labelleft=False)
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
        shares_axis.set_ylabel("share of meta steps (all seeds)")
        shares_axis.set_ylim(0, 1)
        _direction_legend(figure)
        figure.suptitle(
            f"α/γ study — IG on {dataset}, {backbone_name(backbone)}: training-test loss per "
            "meta step (seed 0), test scores and the directions chosen"
        )
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
    """Annotation of sampled unlabeled rows against the planted truth, in two panels: the AUC
    of the model's scores (a ranking, 0.5 = chance), and the accuracy, precision and recall of
    its labels 1[z > 0] (shares, against the truly positive share)."""
    written = []
    label_metrics = ("sampled_accuracy", "sampled_precision", "sampled_recall")
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
        figure = Figure(figsize=(max(8, 0.95 * len(section) + 2.5), 8), layout="constrained")
        auc_axis, label_axis = figure.subplots(2, 1, sharex=True)
        positions = np.arange(len(section))
        tops = [
            _grouped_bars(auc_axis, section, ("sampled_auc",), positions, colors=("tab:purple",))
        ]
        auc_axis.axhline(0.5, color="black", linestyle=":", linewidth=1, label="chance (0.5)")
        auc_axis.set_ylabel("AUC of the scores")
        auc_axis.set_title("How well each model's score ranks truly positive items first")
        tops.append(_grouped_bars(label_axis, section, label_metrics, positions))
        base_rate = section[0].mean.get(BASE_RATE, math.nan)
        if math.isfinite(base_rate):
            label_axis.axhline(
                base_rate,
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"truly positive share ({base_rate:.2f})",
            )
        label_axis.set_ylabel("share")
        label_axis.set_title("Its labels 1[z > 0]: accuracy, precision, recall")
        label_axis.set_xticks(
            positions, [method_name(r.entry) for r in section], rotation=30, ha="right"
        )
        for axis, top in zip((auc_axis, label_axis), tops, strict=True):
            # Above the tallest error bar: a share of 1 (the recall of a model that calls
            # everything positive) and its spread stay visible; the legend sits beside the bars.
            axis.set_ylim(0, max(1.0, top) * 1.06)
            axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
        figure.suptitle(
            f"Annotation of sampled unlabeled items vs planted truth — {dataset}, "
            f"{backbone_name(backbone)} (mean ± std over seeds)"
        )
        written.append(_save(figure, directory / f"{_slug('annotation', dataset, backbone)}.png"))
    return written


def _grouped_bars(
    axis,
    section: Sequence[SummaryRow],
    metrics: Sequence[str],
    positions: np.ndarray,
    colors: Sequence[str] | None = None,
) -> float:
    """One bar per row and metric, side by side, with ±1 std error bars (none if undefined);
    returns the top of the tallest bar or error bar."""
    width = 0.8 / len(metrics)
    top = 0.0
    for index, metric in enumerate(metrics):
        axis.bar(
            positions + (index - (len(metrics) - 1) / 2) * width,
            [_zero_nan(r.mean[metric]) for r in section],
            width=width,
            yerr=[_zero_nan(r.std[metric]) for r in section],
            capsize=2,
            color=colors[index] if colors else None,
            label="AUC" if metric == "sampled_auc" else metric.removeprefix("sampled_"),
        )
        top = max([top, *(_zero_nan(r.mean[metric]) + _zero_nan(r.std[metric]) for r in section)])
    return top


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
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def write_figures(
    outcomes: Sequence[RunOutcome], rows: Sequence[SummaryRow], directory: Path
) -> list[Path]:
    """Every figure the runs allow (a figure whose runs are missing or failed is skipped)."""
    directory.mkdir(parents=True, exist_ok=True)
    with rc_context(FONT_SIZES):
        return (
            plot_idl_weights(outcomes, directory)
            + plot_ig_directions(outcomes, directory)
            + plot_ratio_study(outcomes, directory)
            + plot_annotation(rows, directory)
            + plot_label_fraction(rows, directory)
        )
