"""Aggregation over seeds: one :class:`SummaryRow` per (dataset, backbone, entry).

Every table and figure of the benchmark reads these rows: the mean and the sample standard
deviation (ddof = 1) over seeds of each test metric, skipping undefined values; failed runs are
counted and their errors kept, never dropped. A method that uses no seed (one that does not
train, such as Popularity) gives the same result for every seed: its spread is undefined
(NaN), not a measured 0, so tables show no ± for it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from invlearn_ray.experiments.benchmark.entries import GROUP_MAIN
from invlearn_ray.experiments.runs import RunOutcome
from invlearn_ray.methods.registry import METHOD_SPECS

TABLE_METRICS = ("auc", "gauc", "ndcg_at_10", "ndcg_at_20", "mrr", "full_recall_at_20")
SAMPLED_ESTIMATES = {"full_recall_at_20": "sampled_users_recall_at_20"}
"""Table metrics a run may hold only as a user-sample estimate, and that estimate's key."""
SAMPLE_METRICS = (
    "sampled_users_recall_at_20",
    "sampled_users_recall_at_20_stderr",
    "sampled_users_count",
    "sampled_users_population",
)
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
    def seedless(self) -> bool:
        """Every run's method is computed, not trained: the seeds repeat one result."""
        return bool(self.methods_run) and all(
            name in METHOD_SPECS and not METHOD_SPECS[name].trains for name in self.methods_run
        )

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
            if row.seedless:
                row.std[metric] = math.nan
        rows.append(row)
    return rows
