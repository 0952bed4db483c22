"""What a finished benchmark writes: ``results.csv`` / ``results.md`` (the table),
``runs.csv`` (every seed), ``annotation.md`` and ``figures/*.png``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from invlearn_ray.experiments.benchmark import figures, tables
from invlearn_ray.experiments.benchmark.entries import backbone_name, method_name
from invlearn_ray.experiments.benchmark.grid import Cell
from invlearn_ray.experiments.benchmark.profiles import PROFILES, Profile
from invlearn_ray.experiments.benchmark.summary import SummaryRow
from invlearn_ray.experiments.runs import RunOutcome


def profile_line(profile: Profile) -> str:
    """The profile as it ran: its own description, or the grid the command line narrowed it to
    (a canned description such as "each tuned" would be false after ``--no-tune``)."""
    if profile == PROFILES.get(profile.name):
        return f"Profile `{profile.name}`: {profile.description}."
    # A dataset given by path is used as built: the profile's label fractions do not apply.
    if all(d.source == "path" for d in profile.datasets):
        fractions = "as built"
    else:
        fractions = "at label fraction(s) " + ", ".join(f"{f:g}" for f in profile.label_fractions)
    return (
        f"Profile `{profile.name}` as narrowed on the command line: "
        f"{', '.join(d.base_name for d in profile.datasets)} {fractions}; "
        f"{', '.join(backbone_name(b) for b in profile.backbones)}; "
        f"{', '.join(method_name(e) for e in profile.entries)}; {profile.seeds} seed(s)."
    )


def edge_lines(at_edges: Mapping[Cell, Sequence[str]]) -> list[str]:
    """The report's warning about studies whose best value sat at a search range's end."""
    if not at_edges:
        return []
    return [
        "**Best values at a search range's end** (the optimum may lie outside the space: widen "
        "the range in `tune_spaces/` and rerun; until then these rows were tuned less than "
        "the budget suggests): "
        + "; ".join(
            f"{cell.dataset}/{backbone_name(cell.backbone)}/{method_name(cell.entry)}: "
            + ", ".join(notes)
            for cell, notes in at_edges.items()
        )
        + "."
    ]


def write_report(
    profile: Profile,
    outcomes: Sequence[RunOutcome],
    rows: Sequence[SummaryRow],
    out: Path,
    at_edges: Mapping[Cell, Sequence[str]] | None = None,
) -> list[Path]:
    """Tables and figures into ``out``; returns the files written. ``at_edges``: per tuned
    cell, the best values at a search range's end (:class:`~.tuning.TunedCell`)."""
    notes = [
        profile_line(profile),
        f"Test metrics, mean ± sample std over {profile.seeds} seed(s) (no ± for a method "
        "without a seed, e.g. Popularity: every seed gives the same result); the best mean per "
        "backbone in bold. AUC over all test rows; GAUC = unweighted mean of per-user AUC; "
        "NDCG@K and MRR over each user's labeled test rows (read them against the random floors "
        "below); Recall@20 is full-catalogue (training items excluded).",
        "Configurations were "
        + (
            "tuned on validation with Ray Tune, the same budget per method."
            if profile.tune
            else "given (profile settings / --configs), not tuned."
        ),
        *edge_lines(at_edges or {}),
    ]
    files = [
        tables.write_results_csv(rows, out / "results.csv"),
        tables.write_runs_csv(outcomes, out / "runs.csv"),
    ]
    markdown = tables.results_markdown(rows, f"Benchmark `{profile.name}`", notes)
    ratio_study = tables.ratio_study_markdown(outcomes)
    if ratio_study:
        markdown = markdown.rstrip("\n") + "\n\n" + ratio_study
    (out / "results.md").write_text(markdown)
    files.append(out / "results.md")
    annotation = tables.annotation_markdown(rows)
    if annotation:
        (out / "annotation.md").write_text(annotation)
        files.append(out / "annotation.md")
    files += figures.write_figures(outcomes, rows, out / "figures")
    return files
