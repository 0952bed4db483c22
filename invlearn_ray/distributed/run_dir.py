"""The run folder: what a training run leaves behind, and how it is written and read.

Every training path writes the same folder (:func:`write_run_outputs`)::

    <output_dir>/model/            the selected model, self-contained for recommending:
        model.pt, model.json         weights (``torch.load(weights_only=True)``) + description
        id_map/                      raw user/item ids, copied from the dataset
        seen_items.pt                every user's training items (excluded from rankings)
    <output_dir>/metrics.json      config, selected epoch, valid/test metrics, epoch history
    <output_dir>/direction_log.pt  IG's per-meta-step choices and losses, IDL weight histograms

A Ray Train run also keeps its checkpoints in a run folder of Ray's storage, claimed with
:func:`claim_run_dir`. This module is Ray-free: the single-process path, the Ray Train workers,
the benchmark's runs, its report and the tuning studies all read and write through it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from invlearn_ray.core.checkpoint import save_model
from invlearn_ray.core.trainer import TrainResult
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data.recdata import RecData

MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
DIRECTION_LOG_FILE = "direction_log.pt"
SEEN_ITEMS_FILE = "seen_items.pt"
RUN_DESCRIPTION_FILE = "invlearn_run.json"


class RunConflictError(ValueError):
    """The Ray Train run folder already belongs to a different run."""


def claim_run_dir(run_dir: Path, description: dict[str, Any]) -> None:
    """Record what a Ray Train run folder is for, refusing one that holds another run.

    Ray Train resumes a run whose folder (storage path + name) already holds checkpoints — so
    re-running the same command after a crash continues where it stopped, which is wanted. A
    *different* run there would resume from someone else's checkpoint: refuse it up front.

    Raises:
        RunConflictError: ``run_dir`` was claimed by a run with another description.
    """
    path = run_dir / RUN_DESCRIPTION_FILE
    if path.is_file():
        claimed = json.loads(path.read_text())
        if claimed != description:
            old, new = _flatten(claimed), _flatten(description)
            changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
            raise RunConflictError(
                f"{run_dir} holds the checkpoints of another run (differing in {changed}); "
                "Ray Train would resume it. Choose another output folder (--out) or run name, "
                "or delete that folder to start over."
            )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")


def write_run_outputs(
    result: TrainResult,
    output_dir: Path,
    dataset_path: Path,
    data: RecData,
    workers: int,
    resumed_from_epoch: int | None = None,
) -> dict[str, Any]:
    """Write the selected model, metrics and direction log; return the run's summary."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model_dir = output_dir / MODEL_DIR
    save_model(
        result.model,
        model_dir,
        metadata={
            "method": result.config["method"],
            "best_epoch": result.best_epoch,
            "dataset": str(dataset_path),
            "dataset_name": data.name,
            "train_config": result.config,
        },
    )
    # A model folder carries what recommending needs, so it outlives its dataset folder.
    shutil.copytree(dataset_path / dd.ID_MAP_DIR, model_dir / dd.ID_MAP_DIR, dirs_exist_ok=True)
    seen = data.seen_in_training
    torch.save(
        {"indptr": seen.indptr.cpu(), "items": seen.items.cpu(), "n_items": seen.n_items},
        model_dir / SEEN_ITEMS_FILE,
    )
    torch.save(
        {
            "direction_log": result.direction_log,
            "weight_histograms": result.weight_histograms,
        },
        output_dir / DIRECTION_LOG_FILE,
    )
    summary = {
        "valid": result.valid,
        "test": result.test,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "resumed_from_epoch": resumed_from_epoch,
        "train_seconds": result.train_seconds,
        "workers": workers,
        "output_dir": str(output_dir),
    }
    metrics = {
        **summary,
        "dataset": str(dataset_path),
        "config": result.config,
        "history": [record.flat() for record in result.history],
    }
    # Strict JSON: undefined metrics (e.g. precision with no predicted positives) become null.
    (output_dir / METRICS_FILE).write_text(
        json.dumps(_finite_or_none(metrics), indent=2, allow_nan=False) + "\n"
    )
    return summary


def read_metrics(output_dir: Path) -> dict[str, Any]:
    """A run's ``metrics.json``: its summary, ``dataset``, ``config`` and epoch ``history``."""
    return json.loads((output_dir / METRICS_FILE).read_text())


def read_direction_log(output_dir: Path) -> dict[str, Any] | None:
    """A run's direction log and IDL weight histograms (``direction_log.pt``), or None."""
    path = output_dir / DIRECTION_LOG_FILE
    if not path.is_file():
        return None
    return torch.load(path, weights_only=True)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
