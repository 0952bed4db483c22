"""The benchmark grid: its cells, each cell's configuration, and the runs that train them.

A :class:`Cell` is one table row (an entry) of one dataset and backbone. Its configuration is
resolved by one rule, lowest first::

    TrainConfig defaults < the profile's ``train`` < the ``--configs`` file (narrower scopes
    win) < ``--set`` < the cell's tuned configuration

and then the grid's own fields: the cell's backbone and method (``best_explicit`` trains the
given or tuned loss); each run adds its seed. :func:`resolve_cell_configs` applies the rule. It
is pure — tuned configurations come in as data — so the precedence is tested without Ray;
:mod:`~invlearn_ray.experiments.benchmark.tuning` produces them, pinning every study to what
:func:`chosen_settings` says the user chose.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from invlearn_ray import storage
from invlearn_ray.data.manifest import Manifest
from invlearn_ray.experiments.benchmark.entries import GROUP_MAIN, GROUP_RATIO, entry_method
from invlearn_ray.experiments.benchmark.errors import BenchmarkConfigError
from invlearn_ray.experiments.benchmark.given import GivenConfigs
from invlearn_ray.experiments.benchmark.profiles import Profile
from invlearn_ray.experiments.datasets import DatasetSpec
from invlearn_ray.experiments.runs import RunSpec
from invlearn_ray.methods.registry import METHOD_SPECS
from invlearn_ray.training.config import TrainConfig


class Cell(NamedTuple):
    """One table row of one dataset and backbone."""

    dataset: str
    backbone: str
    entry: str


GRID_FIELDS = {"seed": "--seeds", "backbone": "--backbones", "method": "--methods"}
"""``TrainConfig`` fields the grid sets for each run; a value for every run would be ignored."""


def check_overrides(overrides: Mapping[str, Any]) -> None:
    """Refuse ``--set`` values of fields the grid sets (they used to be silently ignored).

    Raises:
        BenchmarkConfigError: ``overrides`` names a field of :data:`GRID_FIELDS`.
    """
    for name, option in GRID_FIELDS.items():
        if name in overrides:
            raise BenchmarkConfigError(
                f"--set {name}={overrides[name]!r}: {name} is set by the benchmark grid; "
                f"use {option}"
            )


def grid_cells(profile: Profile, dataset_names: Iterable[str]) -> list[Cell]:
    """Every cell, datasets outermost, then backbones, then the profile's entries."""
    return [
        Cell(dataset, backbone, entry)
        for dataset in dataset_names
        for backbone in profile.backbones
        for entry in profile.entries
    ]


def runs_on(entry: str, dataset_path: Path) -> bool:
    """Whether the row can train on the dataset: a method that learns from observed-unlabeled
    rows whatever the source (``watched_positive``) has nothing to learn from on one without
    them (e.g. ML-100K with every label), so its row is left out there, with a note."""
    spec = METHOD_SPECS.get(entry)
    return not (spec and spec.observed_rows and Manifest.read(dataset_path).rows("unclear") == 0)


def left_out_cells(profile: Profile, datasets: Mapping[str, str]) -> list[Cell]:
    """The cells whose method has nothing to learn from on their dataset (see :func:`runs_on`)."""
    return [
        cell
        for cell in grid_cells(profile, datasets)
        if not runs_on(cell.entry, datasets[cell.dataset])
    ]


def chosen_settings(
    cell: Cell, given: GivenConfigs, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """What the user chose for a cell: ``--configs`` < ``--set``. A study keeps these fixed,
    even the fields its space searches (the user narrowed the study on purpose)."""
    return {**given.for_run(cell.entry, cell.backbone), **overrides}


def resolve_cell_configs(
    profile: Profile,
    dataset_names: Iterable[str],
    given: GivenConfigs,
    overrides: Mapping[str, Any],
    tuned: Mapping[Cell, Mapping[str, Any]] | None = None,
    left_out: Collection[Cell] = (),
) -> dict[Cell, dict[str, Any]]:
    """Each cell's ``TrainConfig`` values by the precedence rule of the module docstring.

    Args:
        profile: the grid and its ``train`` settings.
        dataset_names: the datasets' table names, in table order.
        given: the ``--configs`` file's overrides.
        overrides: ``--set`` values (checked by :func:`check_overrides`).
        tuned: each cell's tuned configuration (a tuned profile); None when not tuned.
        left_out: cells without a configuration (:func:`left_out_cells`).

    Returns:
        Per cell, the values that differ from ``TrainConfig``'s defaults (no ``seed``: each run
        sets its own), in grid order.
    """
    configs = {}
    for cell in grid_cells(profile, dataset_names):
        if cell in left_out:
            continue
        values = {**profile.train, **chosen_settings(cell, given, overrides)}
        if tuned is not None:
            values.update(tuned[cell])
        values.update(backbone=cell.backbone, method=entry_method(cell.entry, values))
        values.pop("seed", None)
        configs[cell] = values
    return configs


def plan_runs(
    profile: Profile,
    datasets: Mapping[str, tuple[DatasetSpec, str]],
    configs: Mapping[Cell, dict[str, Any]],
    out: storage.Location,
) -> list[RunSpec]:
    """Every run of the benchmark: rows × seeds, then the α/γ study's IG runs."""
    specs = []
    for dataset_name, (dataset_spec, path) in datasets.items():
        for backbone in profile.backbones:
            for entry in profile.entries:
                if Cell(dataset_name, backbone, entry) not in configs:
                    continue  # left out: see runs_on
                values = configs[Cell(dataset_name, backbone, entry)]
                for seed in range(profile.seeds):
                    config = TrainConfig.from_dict({**values, "seed": seed})
                    specs.append(_spec(dataset_spec, dataset_name, path, entry, config, out))
                if entry != "ig":
                    continue
                for ratio in profile.ratio_study:
                    if math.isclose(ratio, values.get("dual_lr_ratio", TrainConfig.dual_lr_ratio)):
                        continue
                    for seed in range(profile.seeds):
                        config = TrainConfig.from_dict(
                            {**values, "seed": seed, "dual_lr_ratio": ratio}
                        )
                        specs.append(
                            _spec(
                                dataset_spec,
                                dataset_name,
                                path,
                                entry,
                                config,
                                out,
                                group=GROUP_RATIO,
                            )
                        )
    return specs


def _spec(
    dataset: DatasetSpec,
    dataset_name: str,
    path: str,
    entry: str,
    config: TrainConfig,
    out: storage.Location,
    group: str = GROUP_MAIN,
) -> RunSpec:
    row = entry if group == GROUP_MAIN else f"{entry}@ratio{config.dual_lr_ratio:g}"
    key = f"{dataset_name}/{config.backbone}/{row}/seed{config.seed}"
    return RunSpec(
        key=key,
        dataset=str(path),
        dataset_name=dataset_name,
        config=config,
        output_dir=storage.join(
            out, "runs", dataset_name, config.backbone, row, f"seed{config.seed}"
        ),
        tags={"entry": entry, "group": group, "label_fraction": f"{dataset.label_fraction:g}"},
    )
