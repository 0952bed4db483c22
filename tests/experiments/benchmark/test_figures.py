"""The figures: PNGs from run outputs, skipped where their runs are missing."""

from __future__ import annotations

from pathlib import Path

import torch

from invlearn_ray.experiments.benchmark import figures
from invlearn_ray.experiments.benchmark.summary import (
    ANNOTATION_METRICS,
    TABLE_METRICS,
    SummaryRow,
    summarize,
)
from invlearn_ray.experiments.runs import RunOutcome
from invlearn_ray.methods.inverse_gradient import CANDIDATES
from invlearn_ray.training.run_folder import DIRECTION_LOG_FILE


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


def test_figures_are_written_as_png_from_run_outputs(tmp_path, make_outcome):
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
                outcome = make_outcome(entry, seed, test, ratio=ratio)
                _write_direction_log(outcome, generator)
                outcomes.append(outcome)
    rows = summarize(outcomes)
    files = figures.write_figures(outcomes, rows, tmp_path / "figures")
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
        SummaryRow(
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
        for metric in TABLE_METRICS + ANNOTATION_METRICS:
            row.mean[metric], row.std[metric] = 0.5 + row.label_fraction / 10, 0.01
    files = figures.plot_label_fraction(rows, tmp_path)
    assert [path.name for path in files] == ["label_fraction_s_gmf.png"]
    assert figures.plot_label_fraction(rows[:1], tmp_path / "none") == []
