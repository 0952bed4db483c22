"""The run folder: what a training run leaves behind, and how it is written and read.

Every training path writes the same folder (:func:`write_run_outputs`)::

    <output_dir>/model/            the selected model, self-contained for recommending:
        model.pt, model.json         weights (``torch.load(weights_only=True)``) + description
                                     (with the SHA-256 of the two entries below)
        id_map/                      raw user/item ids, copied from the dataset
        seen_items.pt                every user's training items (excluded from rankings)
    <output_dir>/metrics.json      config, selected epoch, valid/test metrics, epoch history
    <output_dir>/direction_log.pt  IG's per-meta-step choices and losses, IDL weight histograms

    <output_dir>/ray/<run name>/   a Ray Train run's checkpoints (default storage)

**Publishing.** A run is written into a hidden staging folder beside its output folder,
``.<name>.staging``, and renamed into place when it is complete (:func:`publish_run`), so a
crash never leaves a new ``model.json`` beside an old ``metrics.json``: the output folder holds
the previous run, or the new one, whole. A folder holding ``metrics.json`` is a *finished* run
and is replaced only when asked (``overwrite``, ``--overwrite``; :func:`check_can_publish`):
then it is retired whole, with everything in it. Anything else already in the output folder
(an interrupted run's leftovers, files a caller put there) moves into the new run folder.

Ray Train keeps a run's checkpoints in its storage folder, by default ``ray/`` *inside the
staging folder*: the staging folder's name is fixed, so re-running the same command after a
crash finds the checkpoints and resumes (:func:`claim_run_dir` refuses another run there);
after publishing they are at ``<output_dir>/ray/<run name>``. A Ray run that fails keeps its
staging folder for that reason (unless it diverged: a rerun must change its settings, so there
is nothing to resume); a one-process run that fails removes it. The swap itself is
:mod:`invlearn_ray.data.publishing`'s; what a hard crash left beside run folders — swap
leftovers, staging folders without checkpoints — is removed a day later
(:func:`remove_stale_runs`).

This module is Ray-free: the single-process path, the Ray Train workers, the benchmark's runs,
its report and the tuning studies all read and write through it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from invlearn_ray import storage
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data import publishing
from invlearn_ray.data.recdata import RecData
from invlearn_ray.errors import UserError
from invlearn_ray.models.checkpoint import save_model
from invlearn_ray.training.trainer import TrainResult

MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
DIRECTION_LOG_FILE = "direction_log.pt"
SEEN_ITEMS_FILE = "seen_items.pt"
RUN_DESCRIPTION_FILE = "invlearn_run.json"
RAY_STORAGE_DIR = "ray"
MODEL_DATA_FILES = (
    f"{dd.ID_MAP_DIR}/users.parquet",
    f"{dd.ID_MAP_DIR}/items.parquet",
    SEEN_ITEMS_FILE,
)
"""Files of ``model/`` that come from the dataset (checked against :func:`model_file_digests`)."""
MODEL_FILE_DIGESTS = "file_sha256"
"""Key of ``model.json``'s metadata that records :func:`model_file_digests`."""


class RunConflictError(ValueError, UserError):
    """The Ray Train run folder already belongs to a different run."""


class RunExistsError(ValueError, UserError):
    """The output folder holds a finished run and replacing it was not asked for."""


def is_finished_run(output_dir: storage.Location) -> bool:
    """Whether ``output_dir`` holds a finished run: locally ``metrics.json`` (written last,
    then the folder renamed into place); in an object store, its commit file (written last)."""
    if storage.is_local(output_dir):
        return (Path(storage.absolute(output_dir)) / METRICS_FILE).is_file()
    return storage.is_file(storage.join(output_dir, storage.COMMIT_FILE))


def check_can_publish(output_dir: storage.Location, overwrite: bool) -> None:
    """Refuse, before any work, a run that would replace a finished one unasked.

    Raises:
        RunExistsError: ``output_dir`` is a file, or holds a finished run and ``overwrite`` is
            False.
    """
    if storage.is_file(output_dir):
        raise RunExistsError(f"{output_dir} is a file, not a run folder; choose another --out")
    if is_finished_run(output_dir) and not overwrite:
        raise RunExistsError(
            f"{output_dir} already holds a finished run; pass --overwrite to replace it, or "
            "choose another --out"
        )


def upload_run(folder: Path, output_dir: str) -> None:
    """Publish the complete run in the local ``folder`` to the object-store ``output_dir``.

    No rename exists there, so the commit protocol of :mod:`invlearn_ray.storage` stands in:
    the old commit file goes first (from then on the location holds no finished run), every
    file is copied, and the commit file — every file's size and SHA-256, hashed from the local
    copy — comes last. A reader trusts the folder through it (:func:`read_metrics`).
    """
    storage.begin_write(output_dir)
    storage.copy_tree(str(folder), output_dir)
    records = storage.record_files(str(folder))
    body = {"format": storage.COMMIT_FORMAT, "files": [vars(record) for record in records]}
    storage.write_text(storage.join(output_dir, storage.COMMIT_FILE), json.dumps(body) + "\n")
    storage.end_write(output_dir)


def staging_dir(output_dir: Path) -> Path:
    """The hidden folder beside ``output_dir`` that a run is written into. Its name is fixed,
    so a rerun after a crash finds the Ray Train checkpoints inside it (and
    :func:`~invlearn_ray.data.publishing.remove_stale` never takes it for a leftover)."""
    return output_dir.parent / f".{output_dir.name}.staging"


def is_abandoned_staging(folder: Path) -> bool:
    """Whether ``folder`` is a run's staging folder with no Ray Train checkpoints in it — what
    an interrupted one-process run leaves: nothing would resume from it."""
    name = folder.name
    return (
        name.startswith(".")
        and name.endswith(".staging")
        and not (folder / RAY_STORAGE_DIR).exists()
    )


def remove_stale_runs(parent: Path) -> list[Path]:
    """Remove day-old leftovers of publishing and abandoned staging folders beside run folders
    (:func:`~invlearn_ray.data.publishing.remove_stale`)."""
    return publishing.remove_stale(parent, also=is_abandoned_staging)


def publish_run(staging: Path, output_dir: Path, inputs: Sequence[Path] = ()) -> None:
    """Rename the complete run in ``staging`` into place as ``output_dir``.

    A finished run in ``output_dir`` is retired whole (the caller checked ``overwrite``); the
    entries of an unfinished one that the new run did not write move into it. ``inputs`` are
    paths inside ``output_dir`` the new run read (e.g. a smoke-test dataset built there): they
    move into it even from a finished run, so the published folder still holds them.
    """
    if output_dir.exists():
        finished = is_finished_run(output_dir)
        kept = {path.resolve() for path in inputs}
        for entry in sorted(output_dir.iterdir()):
            if (not finished or entry.resolve() in kept) and not (staging / entry.name).exists():
                entry.rename(staging / entry.name)
    publishing.publish(staging, output_dir)


def claim_run_dir(run_dir: storage.Location, description: dict[str, Any]) -> None:
    """Record what a Ray Train run folder is for, refusing one that holds another run.

    Ray Train resumes a run whose folder (storage path + name) already holds checkpoints — so
    re-running the same command after a crash continues where it stopped, which is wanted. A
    *different* run there would resume from someone else's checkpoint: refuse it up front.

    Raises:
        RunConflictError: ``run_dir`` was claimed by a run with another description.
    """
    check_claim(run_dir, description)
    path = storage.join(run_dir, RUN_DESCRIPTION_FILE)
    if not storage.is_file(path):
        storage.make_dirs(run_dir)
        storage.write_text(path, json.dumps(description, indent=2, sort_keys=True) + "\n")


def check_claim(run_dir: storage.Location, description: dict[str, Any]) -> None:
    """:func:`claim_run_dir`'s refusal alone, writing nothing.

    Raises:
        RunConflictError: ``run_dir`` was claimed by a run with another description.
    """
    path = storage.join(run_dir, RUN_DESCRIPTION_FILE)
    if not storage.is_file(path):
        return
    claimed = json.loads(storage.read_text(path))
    if claimed != description:
        old, new = _flatten(claimed), _flatten(description)
        changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
        raise RunConflictError(
            f"{run_dir} holds the checkpoints of another run (differing in {changed}); "
            "Ray Train would resume it. Choose another output folder (--out) or run name, "
            "or delete that folder to start over."
        )


def write_run_outputs(
    result: TrainResult,
    folder: Path,
    dataset_path: storage.Location,
    data: RecData,
    workers: int,
    resumed_from_epoch: int | None = None,
    output_dir: storage.Location | None = None,
) -> dict[str, Any]:
    """Write the selected model, metrics and direction log; return the run's summary.

    The one writer of run folders: final runs and tuning trials alike. A trial's candidate
    (``result.scored_on_test`` False) has no test metrics, and its ``model/`` holds the
    weights and description only: the id maps and seen items (the training rows' size) are
    copied once, for the configuration a study re-runs and scores, not for every trial.

    Args:
        folder: where the files go (a staging folder, published afterwards).
        output_dir: the run folder the summary names (default: ``folder``).
    """
    output_dir = output_dir or folder
    folder.mkdir(parents=True, exist_ok=True)
    model_dir = folder / MODEL_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    metadata: dict[str, Any] = {
        "method": result.config["method"],
        "best_epoch": result.best_epoch,
        "dataset": str(dataset_path),
        "dataset_name": data.name,
        "train_config": result.config,
    }
    if result.scored_on_test:
        # A model folder carries what recommending needs, so it outlives its dataset folder.
        storage.copy_tree(storage.join(dataset_path, dd.ID_MAP_DIR), str(model_dir / dd.ID_MAP_DIR))
        seen = data.seen_in_training
        torch.save(
            {"indptr": seen.indptr.cpu(), "items": seen.items.cpu(), "n_items": seen.n_items},
            model_dir / SEEN_ITEMS_FILE,
        )
        metadata[MODEL_FILE_DIGESTS] = model_file_digests(model_dir)
    save_model(result.model, model_dir, metadata=metadata)
    torch.save(
        {
            "direction_log": result.direction_log,
            "weight_histograms": result.weight_histograms,
        },
        folder / DIRECTION_LOG_FILE,
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
        "full_ranking_sample": result.full_ranking_sample,
    }
    # Strict JSON: undefined metrics (e.g. precision with no predicted positives) become null.
    (folder / METRICS_FILE).write_text(
        json.dumps(finite_or_none(metrics), indent=2, allow_nan=False) + "\n"
    )
    return summary


def write_run(
    result: TrainResult,
    output_dir: storage.Location,
    dataset_path: storage.Location,
    data: RecData,
    workers: int,
    resumed_from_epoch: int | None = None,
    staging: Path | None = None,
) -> dict[str, Any]:
    """:func:`write_run_outputs` to wherever the run goes: into ``staging`` (a local run,
    renamed into place by the caller), else into a temporary folder uploaded to the
    object-store ``output_dir`` (:func:`upload_run`) from the node that trained."""
    if staging is not None or storage.is_local(output_dir):
        folder = staging if staging is not None else Path(storage.absolute(output_dir))
        return write_run_outputs(
            result, folder, dataset_path, data, workers, resumed_from_epoch, output_dir
        )
    with tempfile.TemporaryDirectory(prefix="invlearn-run-") as folder:
        summary = write_run_outputs(
            result, Path(folder), dataset_path, data, workers, resumed_from_epoch, output_dir
        )
        upload_run(Path(folder), str(output_dir))
    return summary


def model_file_digests(model_dir: Path) -> dict[str, str]:
    """SHA-256 of the files a model folder takes from its dataset (:data:`MODEL_DATA_FILES`),
    recorded in ``model.json`` so a folder mixing another dataset's files is caught. Time: one
    read of the id maps and the seen items (linear in users + items + training rows)."""
    return {name: file_digest(model_dir / name) for name in MODEL_DATA_FILES}


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_metrics(output_dir: storage.Location) -> dict[str, Any]:
    """A run's ``metrics.json``: its summary, ``dataset``, ``config`` and epoch ``history``."""
    return json.loads(storage.read_text(storage.join(output_dir, METRICS_FILE)))


def read_direction_log(output_dir: storage.Location) -> dict[str, Any] | None:
    """A run's direction log and IDL weight histograms (``direction_log.pt``), or None."""
    path = storage.join(output_dir, DIRECTION_LOG_FILE)
    if not storage.is_file(path):
        return None
    return torch.load(io.BytesIO(storage.read_bytes(path)), weights_only=True)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def finite_or_none(value: Any) -> Any:
    """Strict JSON: non-finite floats (undefined metrics) become null, at any depth."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
