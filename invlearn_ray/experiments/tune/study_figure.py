"""A study's picture (``search.png``): how its search went, and what each parameter did.

* First panel: every trial's best validation score in the order the trials started, and the
  best score so far (a search that learns climbs early and keeps finding good trials late).
* One panel per searched parameter: each trial's value against its score, coloured by when the
  trial started (dark: early; yellow: late — TPE's late trials gather where scores are high);
  ``loguniform`` ranges on a log axis, choices as categories. The best trial is a red star;
  hollow points are trials that stopped before the last epoch (ASHA or early stopping).

Trials without a score (failed, or every epoch undefined) are counted in the title only.
Rendered with a Matplotlib ``Figure`` straight to PNG: no pyplot, no global backend state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from invlearn_ray.evaluation.metrics import display_name
from invlearn_ray.experiments.spaces import Distribution, StudySpace

COLUMNS = 3
PANEL_SIZE = (4.6, 3.4)
COLOURS = "viridis"


def _scored_in_start_order(trials: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    scored = [t for t in trials if t["best_valid"] is not None and math.isfinite(t["best_valid"])]
    return sorted(scored, key=lambda t: (t["started"] is None, t["started"] or 0.0, t["trial_id"]))


def plot_study(trials: Sequence[dict[str, Any]], space: StudySpace, title: str) -> Figure:
    """The study's figure (see the module docstring) from its trial summaries
    (:func:`~invlearn_ray.experiments.tune.study.summarize_trials`)."""
    scored = _scored_in_start_order(trials)
    panels = 1 + len(space.search)
    rows = math.ceil(panels / COLUMNS)
    columns = min(COLUMNS, panels)
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    metric = display_name(space.metric)
    unscored = len(trials) - len(scored)
    figure.suptitle(
        f"{title}: {len(trials)} trials" + (f", {unscored} without a score" if unscored else ""),
        fontsize=12,
    )
    figure.text(
        0.5,
        0.005,
        "colour: when the trial started (dark: early, yellow: late); hollow: stopped before "
        "the last epoch; red star: the best trial",
        ha="center",
        va="bottom",
        fontsize=9,
        color="0.3",
    )
    scores = np.array([t["best_valid"] for t in scored], dtype=float)
    order = np.arange(1, len(scored) + 1)
    epochs = space.trial_config({}).epochs
    full = np.array([t["epochs_reported"] >= epochs for t in scored], dtype=bool)
    best = int(np.argmax(scores)) if len(scores) else None

    ax = axes[0]
    ax.scatter(order, scores, s=14, color="0.55", label="trial", zorder=2)
    if len(scores):
        ax.step(
            order,
            np.maximum.accumulate(scores),
            where="post",
            color="tab:blue",
            lw=2,
            label="best so far",
            zorder=3,
        )
        ax.scatter([order[best]], [scores[best]], marker="*", s=160, color="tab:red", zorder=4)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("trial (in start order)")
    ax.set_ylabel(metric)
    ax.set_title("best so far", fontsize=10)
    ax.grid(alpha=0.3)

    for ax, (name, dist) in zip(axes[1:], space.search.items(), strict=False):
        values = [t["params"].get(name) for t in scored]
        _parameter_panel(ax, name, dist, values, scores, order, full, best)
        ax.set_ylabel(metric)
    for ax in axes[panels:]:
        ax.set_visible(False)
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    return figure


def _parameter_panel(
    ax,
    name: str,
    dist: Distribution,
    values: list[Any],
    scores: np.ndarray,
    order: np.ndarray,
    full: np.ndarray,
    best: int | None,
) -> None:
    known = np.array([value is not None for value in values], dtype=bool)
    if dist.kind == "choice":
        labels = [_label(v) for v in _sorted_choices(dist.args)]
        position = {label: index for index, label in enumerate(labels)}
        # A little horizontal spread, the same on every run, so equal choices do not overlap.
        jitter = np.random.default_rng(0).uniform(-0.18, 0.18, len(values))
        x = np.array(
            [position[_label(v)] if v is not None else np.nan for v in values], dtype=float
        )
        x = x + jitter
        ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0, fontsize=8)
        ax.set_xlim(-0.6, len(labels) - 0.4)
    else:
        x = np.array([float(v) if v is not None else np.nan for v in values], dtype=float)
        if dist.kind == "loguniform":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^-1 ... labels overlap
        low, high = dist.args
        if dist.kind == "loguniform" and high / low < 100:  # under two decades: label the range
            ticks = np.geomspace(low, high, 5)
            ax.set_xticks(ticks, [f"{tick:.3g}" for tick in ticks], fontsize=8)
        ax.axvspan(low, high, color="0.95", zorder=0)  # the searched range
    colours = order / max(len(order), 1)
    filled, hollow = known & full, known & ~full
    ax.scatter(
        x[filled], scores[filled], c=colours[filled], cmap=COLOURS, vmin=0, vmax=1, s=18, zorder=2
    )
    ax.scatter(
        x[hollow],
        scores[hollow],
        facecolors="none",
        s=18,
        zorder=2,
        edgecolors=_cmap_colours(colours[hollow]),
    )
    if best is not None and known[best]:
        ax.scatter([x[best]], [scores[best]], marker="*", s=160, color="tab:red", zorder=4)
    scale = " (log)" if dist.kind == "loguniform" else ""
    ax.set_title(f"{name}{scale}", fontsize=10)
    ax.grid(alpha=0.3)


def _cmap_colours(values: np.ndarray) -> np.ndarray:
    return colormaps[COLOURS](values)


def _sorted_choices(values: Sequence[Any]) -> list[Any]:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    return sorted(values) if numbers else list(values)


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def write_study_figure(
    path: Path, trials: Sequence[dict[str, Any]], space: StudySpace, title: str
) -> Path:
    """Render :func:`plot_study` to ``path`` (PNG); returns ``path``."""
    plot_study(trials, space, title).savefig(path, dpi=110)
    return path
