"""Tuned profiles: one Ray Tune study per cell, the same budget for every method.

Each study searches its entry's space (``ENTRY_SPACES``) with the fields :func:`study_pins`
fixes, selects on validation only, and is never re-run once finished
(:func:`~invlearn_ray.experiments.tune.run_study` reuses its folder).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invlearn_ray import storage
from invlearn_ray.data.manifest import Manifest
from invlearn_ray.experiments.benchmark.entries import BEST_EXPLICIT, ENTRY_SPACES
from invlearn_ray.experiments.benchmark.errors import BenchmarkInterrupted
from invlearn_ray.experiments.benchmark.given import GivenConfigs
from invlearn_ray.experiments.benchmark.grid import Cell, chosen_settings, grid_cells
from invlearn_ray.experiments.benchmark.profiles import Profile
from invlearn_ray.experiments.spaces import StudySpace, load_space
from invlearn_ray.experiments.tracking import Tracker
from invlearn_ray.experiments.tune import run_study
from invlearn_ray.models.backbones import BACKBONES

logger = logging.getLogger(__name__)

POPULARITY = "popularity"
POPULARITY_FIELDS = ("popularity_prior", "popularity_play_weight")
"""The popularity scorer's settings, which also set where ``bias_init='popularity'`` starts."""


@dataclass(frozen=True)
class TunedCell:
    """A study's best configuration, and each searched field it left at an end of its range
    (``"lr = 0.0931 (high end of loguniform [0.0001, 0.1])"``): there the optimum may lie
    outside the space, and the row's tuning is not the fair budget it claims to be."""

    config: dict[str, Any]
    at_edges: tuple[str, ...] = ()


def edge_notes(space: StudySpace, config: Mapping[str, Any]) -> tuple[str, ...]:
    """One line per searched field of ``space`` whose value in ``config`` sits at an end of
    its range (:meth:`~invlearn_ray.experiments.spaces.StudySpace.edges`)."""
    notes = []
    for name, end in space.edges(config).items():
        distribution, value = space.search[name], config[name]
        shown = f"{value:.3g}" if isinstance(value, float) else value
        drawn_from = f"{distribution.kind} {list(distribution.args)}"
        notes.append(f"{name} = {shown} ({end} end of {drawn_from})")
    return tuple(notes)


def study_pins(
    profile: Profile,
    entry: str,
    backbone: str,
    space: StudySpace,
    given: Mapping[str, Any],
    dataset_path: storage.Location,
) -> dict[str, Any]:
    """The fields a row's study fixes: profile settings the space does not search, given
    settings (even searched ones: the user narrowed the study on purpose), the row itself.

    On a dataset without observed-unlabeled rows the unlabeled source is pinned to ``sampled``:
    ``observed`` cannot train there and ``both`` would equal ``sampled``, so trials spent on
    them would be wasted budget that the other methods' studies do not lose. (Choices the
    pinned backbone cannot take, such as ``bias_init='popularity'`` without item biases, are
    dropped by :meth:`~invlearn_ray.experiments.spaces.StudySpace.pinned`.)
    """
    pins = {key: value for key, value in profile.train.items() if key not in space.search}
    pins.update(given)
    pins["backbone"] = backbone
    if entry != BEST_EXPLICIT:
        pins["method"] = entry
    if "unlabeled_source" in space.search and "unlabeled_source" not in given:
        if Manifest.read(dataset_path).rows("unclear") == 0:
            pins["unlabeled_source"] = "sampled"
    return pins


def tune_cell(
    profile: Profile,
    cell: Cell,
    dataset_path: storage.Location,
    chosen: Mapping[str, Any],
    out: Path,
    experiment: str,
    spaces_dir: Path,
    tune_verbose: int = 0,
    shared: storage.Location | None = None,
) -> TunedCell:
    """Run (or reuse) the study of one cell (fields pinned by :func:`study_pins`); returns its
    best configuration and the fields it left at a range's end (logged as a warning).
    ``tune_verbose`` is Ray Tune's own console output (0: none; the study logs one line per
    trial instead). The study's folder is ``out/studies/<dataset>/<backbone>/<entry>``; what its
    trials write goes to the same path under ``shared`` (default ``out``).

    Raises:
        BenchmarkInterrupted: the study was interrupted; the same command resumes it.
    """
    dataset_name, backbone, entry = cell
    space = load_space(spaces_dir / ENTRY_SPACES[entry])
    space = space.pinned(**study_pins(profile, entry, backbone, space, chosen, dataset_path))
    study_dir = out / "studies" / dataset_name / backbone / entry
    study_storage = (
        storage.join(shared, "studies", dataset_name, backbone, entry) if shared else None
    )
    logger.info(
        f"tuning {dataset_name}/{backbone}/{entry}: {profile.tune.trials} trials -> {study_dir}"
    )
    result = run_study(
        space,
        dataset_path,
        profile.tune,
        study_dir,
        name=f"{dataset_name}/{backbone}/{entry}",
        tracker=Tracker(f"{experiment} study {dataset_name} {backbone} {entry}", out),
        score_best=False,
        verbose=tune_verbose,
        storage_location=study_storage,
    )
    if not result.complete:
        raise BenchmarkInterrupted(
            f"study {study_dir} was interrupted; run the same command again to resume it"
        )
    logger.info(
        f"tuned {dataset_name}/{backbone}/{entry}: best {space.metric} {result.best_valid:.4f} "
        f"(trial {result.best_trial_id}, {result.failed_trials} failed trials)"
    )
    tuned = TunedCell(dict(result.best_config), edge_notes(space, result.best_config))
    if tuned.at_edges:
        logger.warning(
            f"{dataset_name}/{backbone}/{entry}: best value at a search range's end, the "
            f"optimum may lie outside it (widen {ENTRY_SPACES[entry]}): "
            + "; ".join(tuned.at_edges)
        )
    return tuned


def tune_cells(
    profile: Profile,
    datasets: Mapping[str, storage.Location],
    given: GivenConfigs,
    overrides: Mapping[str, Any],
    out: Path,
    experiment: str,
    spaces_dir: Path,
    tune_verbose: int = 0,
    left_out: Collection[Cell] = (),
    shared: storage.Location | None = None,
) -> dict[Cell, TunedCell]:
    """The tuned configuration of every cell of ``profile`` on ``datasets`` (name → folder)
    but the ``left_out`` ones, each study pinned to what the user chose for its cell.

    Popularity rows are tuned first: a row whose backbone can start from the popularity
    scorer (``bias_init``) starts from the *tuned* one of its dataset (:func:`popularity_start`).
    The studies' own files stay in ``out``; their trials write to ``shared`` (default ``out``).
    """
    cells = [cell for cell in grid_cells(profile, datasets) if cell not in left_out]
    tuned: dict[Cell, TunedCell] = {}
    for cell in sorted(cells, key=lambda cell: cell.entry != POPULARITY):
        chosen = {**popularity_start(cell, tuned), **chosen_settings(cell, given, overrides)}
        tuned[cell] = tune_cell(
            profile,
            cell,
            datasets[cell.dataset],
            chosen,
            out,
            experiment,
            spaces_dir,
            tune_verbose,
            shared,
        )
    return {cell: tuned[cell] for cell in cells}


def popularity_start(cell: Cell, tuned: Mapping[Cell, TunedCell]) -> dict[str, Any]:
    """The tuned popularity scorer's settings (``POPULARITY_FIELDS``) for a row whose backbone
    has item biases, so that ``bias_init='popularity'`` starts from the scorer the table
    compares it with rather than from the defaults (w = 5, λ = 0: on ML-100K at 10 % labels
    test GAUC 0.636 against the tuned scorer's 0.647). Empty when the dataset has no tuned
    popularity row (not in ``--methods``) or the backbone has no item biases."""
    scorer = tuned.get(Cell(cell.dataset, cell.backbone, POPULARITY))
    if scorer is None or cell.entry == POPULARITY:
        return {}
    if not BACKBONES[cell.backbone].learns_item_bias:
        return {}
    return {name: scorer.config[name] for name in POPULARITY_FIELDS}
