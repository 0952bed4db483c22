"""The arithmetic of ``benchmarks/search_efficiency.py``: best validation score after k trials
in the order a searcher drew them, and when one search first reaches another's best.

Kept apart from the script, without Ray, torch or MLflow, so that its tests run in
milliseconds (importing the study machinery takes ~10 s on 2 loaded cores).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence


def best_after(scores: Sequence[float | None], k: int) -> float | None:
    """The best score among the first ``k`` trials (None: none of them has a score).

    Args:
        scores: each trial's best validation score in the order the trials were drawn;
            None for a trial that failed or never reported.
        k: how many trials.
    """
    scored = [score for score in scores[:k] if score is not None and math.isfinite(score)]
    return max(scored) if scored else None


def best_so_far(scores: Sequence[float | None]) -> list[float | None]:
    """:func:`best_after` for every prefix: element ``i`` is the best of trials 1..i+1."""
    return [best_after(scores, k) for k in range(1, len(scores) + 1)]


def first_reaching(curve: Sequence[float | None], target: float) -> int | None:
    """The trial count (1-based) at which a best-so-far ``curve`` first reaches ``target``;
    None if it never does."""
    for count, value in enumerate(curve, start=1):
        if value is not None and value >= target:
            return count
    return None


def mean_curve(curves: Sequence[Sequence[float | None]]) -> list[float | None]:
    """The mean of equally long best-so-far curves at each trial count (None where any seed
    has no score yet)."""
    means: list[float | None] = []
    for values in zip(*curves, strict=True):
        means.append(None if None in values else statistics.fmean(values))
    return means


def checkpoints(trials: int) -> list[int]:
    """8, 16, 32, ... below ``trials``, then ``trials`` itself."""
    counts, k = [], 8
    while k < trials:
        counts.append(k)
        k *= 2
    return [*counts, trials]


def mean_sd(values: Sequence[float | None], digits: int = 4) -> str:
    """``0.6812 ± 0.0041`` over the values that exist (``n/a`` if none; no ± for one)."""
    present = [value for value in values if value is not None]
    if not present:
        return "n/a"
    if len(present) == 1:
        return f"{present[0]:.{digits}f}"
    return f"{statistics.fmean(present):.{digits}f} ± {statistics.stdev(present):.{digits}f}"


def draw_index(trial_id: str, trial_dir_name: str) -> int:
    """When a trial was drawn (1-based), from the name Tune gives its folder:
    ``<trainable>_<trial id>_<draw counter>_<params>_<date>``. (Trial ids of searchers
    other than random search are random hex, so they do not sort in draw order.)"""
    match = re.search(rf"_{re.escape(trial_id)}_(\d+)_", trial_dir_name)
    if match is None:
        raise ValueError(f"trial folder {trial_dir_name!r} does not name trial {trial_id}'s draw")
    return int(match.group(1))
