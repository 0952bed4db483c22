"""One training run on a built dataset: one process, or N data-parallel Ray Train workers.

:func:`run_training` is the single entry point. With ``num_workers=0`` it runs the plain
:class:`~invlearn_ray.core.trainer.Trainer` in this process and never imports Ray (the GPU
benchmark host may not have it). With ``num_workers >= 1`` it builds a Ray ``TorchTrainer``
around :func:`invlearn_ray.distributed.train_loop.train_loop_per_worker`:

* ``train_train/`` and ``train_test/`` are read with ``ray.data.read_parquet`` (once, on the
  driver) and split across the workers by :class:`ExactSplitConfig` — every row reaches
  exactly one worker, and the same worker on every attempt (the default split may drop up to
  ``N - 1`` rows and assigns blocks in arrival order);
* each worker gets ``cpus_per_worker`` CPUs (default 0.5): with a whole CPU each, two workers
  hold both cores of a 2-CPU machine and no Ray Data task can run beside them (ray_notes.md);
* rank 0 checkpoints after every epoch, ``FailureConfig(max_failures)`` restarts a failed
  worker group from the last checkpoint, ``CheckpointConfig(num_to_keep)`` prunes old ones;
* checkpoints live in ``<storage_path>/<run_name>`` (default ``<output_dir>/ray/<output
  folder name>``). Ray Train resumes a run whose folder holds checkpoints, so re-running the
  same command after a crash continues where it stopped (a finished run returns at once);
  :func:`claim_run_dir` refuses a folder that holds a *different* run.

Both paths write the same output folder (:func:`write_run_outputs`)::

    <output_dir>/model/            the selected model, self-contained for recommending:
        model.pt, model.json         weights (``torch.load(weights_only=True)``) + description
        id_map/                      raw user/item ids, copied from the dataset
        seen_items.pt                every user's training items (excluded from rankings)
    <output_dir>/metrics.json      config, selected epoch, valid/test metrics, epoch history
    <output_dir>/direction_log.pt  IG's per-meta-step choices and losses, IDL weight histograms

On a multi-node cluster ``output_dir`` must be a path rank 0's node can write and the driver
can read (a shared filesystem): rank 0 writes it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from invlearn_ray.core.checkpoint import save_model
from invlearn_ray.core.config import TrainConfig
from invlearn_ray.core.trainer import Trainer, TrainResult
from invlearn_ray.data import canonical as cn
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.data.recdata import RecData

if TYPE_CHECKING:
    from ray.data import Dataset

MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
DIRECTION_LOG_FILE = "direction_log.pt"
SEEN_ITEMS_FILE = "seen_items.pt"
RUN_DESCRIPTION_FILE = "invlearn_run.json"
SHARDED_SPLITS = ("train_train", "train_test")
"""Splits read through Ray Data and divided among workers; every other split is small and
global (validation, test, the seen-item index), so each worker loads it whole."""
SHARD_COLUMNS = (cn.ROW, cn.USER, cn.ITEM, cn.LABEL)

TEST_SWITCHES = (
    "_test_fail_once_at_epoch",
    "_test_fail_rank",
    "_test_fail_marker",
    "_test_record_batches_dir",
)
"""Test-only keys of the worker config (see ``train_loop``); nothing else may start with
``_test_``, so a misspelt switch cannot silently do nothing."""


class RunConflictError(ValueError):
    """The Ray Train run folder already belongs to a different run."""


class TrainingRunError(RuntimeError):
    """A Ray Train run failed beyond its allowed restarts; the message names the worker error."""


def run_training(
    dataset_path: str | Path,
    config: TrainConfig,
    num_workers: int,
    output_dir: str | Path,
    use_gpu: bool = False,
    cpus_per_worker: float = 0.5,
    max_failures: int = 1,
    storage_path: str | Path | None = None,
    num_to_keep: int = 2,
    run_name: str | None = None,
    test_switches: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``config`` on the dataset at ``dataset_path`` and write the run's outputs.

    Args:
        dataset_path: a folder written by ``pipelines/build_data.py``.
        config: what to train.
        num_workers: data-parallel Ray Train workers; 0 runs one process without Ray.
        output_dir: where the selected model and the metrics go (see the module docstring).
        use_gpu: one GPU per worker (nccl); CPU workers use gloo.
        cpus_per_worker: CPUs reserved per worker (fractions leave room for Ray Data's reads).
        max_failures: worker-group restarts allowed, each resuming from the last checkpoint.
        storage_path: where Ray Train keeps checkpoints (default ``<output_dir>/ray``).
        num_to_keep: checkpoints kept (the newest ones).
        run_name: Ray Train run name (default: the output folder's name).
        test_switches: test-only worker switches, keys from :data:`TEST_SWITCHES`.

    Returns:
        The run's summary: ``valid`` and ``test`` metrics of the selected model,
        ``best_epoch``, ``epochs_run``, ``resumed_from_epoch`` (None unless the final attempt
        resumed from a checkpoint), ``output_dir``; Ray runs add ``last_checkpoint``.

    Raises:
        ValueError: ``num_workers < 0`` or an unknown test switch.
        RunConflictError: the Ray Train run folder holds another run's checkpoints.
        TrainingRunError: a Ray run failed more than ``max_failures`` times.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 (0 = one process, no Ray), got {num_workers}")
    unknown = sorted(set(test_switches or {}) - set(TEST_SWITCHES))
    if unknown:
        raise ValueError(f"unknown test switch(es) {unknown}; valid: {list(TEST_SWITCHES)}")
    dataset_path, output_dir = Path(dataset_path).resolve(), Path(output_dir).resolve()
    dd.read_manifest(dataset_path)  # fail here, not in every worker, on a non-dataset folder
    if num_workers == 0:
        return train_single_process(dataset_path, config, output_dir, use_gpu=use_gpu)
    storage_path = Path(storage_path).resolve() if storage_path else output_dir / "ray"
    run_name = run_name or output_dir.name
    claim_run_dir(
        storage_path / run_name,
        {"dataset": str(dataset_path), "train": config.to_dict(), "num_workers": num_workers},
    )
    return _train_with_ray(
        dataset_path,
        config,
        num_workers,
        output_dir,
        use_gpu=use_gpu,
        cpus_per_worker=cpus_per_worker,
        max_failures=max_failures,
        storage_path=storage_path,
        num_to_keep=num_to_keep,
        run_name=run_name,
        test_switches=test_switches or {},
    )


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


def train_single_process(
    dataset_path: Path, config: TrainConfig, output_dir: Path, use_gpu: bool = False
) -> dict[str, Any]:
    """The reference path: :meth:`Trainer.fit` in this process, no Ray."""
    if use_gpu and not torch.cuda.is_available():
        raise RuntimeError("use_gpu was requested but torch sees no CUDA device")
    device = torch.device("cuda" if use_gpu else "cpu")
    data = load_dataset(dataset_path, device)
    result = Trainer(config, data).fit()
    return write_run_outputs(result, output_dir, dataset_path, data, workers=0)


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


def read_shard_dataset(dataset_path: Path, split: str) -> Dataset:
    """A labeled split as a materialised Ray Dataset, rows in file order.

    Materialised once, on the driver, before the workers hold their CPUs: the read cannot be
    starved by the workers (the 2-CPU hang of ray_notes.md), and a restarted worker group
    re-splits the same blocks instead of re-reading Parquet. File order (``preserve_order``)
    makes :class:`ExactSplitConfig`'s row ranges the same rows on every run.
    """
    import ray.data

    dataset = ray.data.read_parquet(str(dataset_path / split))
    dataset.context.execution_options.preserve_order = True
    return dataset.select_columns(list(SHARD_COLUMNS)).materialize()


def _train_with_ray(
    dataset_path: Path,
    config: TrainConfig,
    num_workers: int,
    output_dir: Path,
    *,
    use_gpu: bool,
    cpus_per_worker: float,
    max_failures: int,
    storage_path: Path,
    num_to_keep: int,
    run_name: str,
    test_switches: dict[str, Any],
) -> dict[str, Any]:
    # Ray is imported only on this path: one-process training must run where Ray is absent.
    import ray.train
    from ray.train.torch import TorchTrainer

    from invlearn_ray.distributed.train_loop import ExactSplitConfig, train_loop_per_worker

    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "dataset": str(dataset_path),
            "train": config.to_dict(),
            "output_dir": str(output_dir),
            **test_switches,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=str(storage_path),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=num_to_keep),
        ),
        datasets={split: read_shard_dataset(dataset_path, split) for split in SHARDED_SPLITS},
        dataset_config=ExactSplitConfig(),
    )
    try:
        result = trainer.fit()
    except ray.train.WorkerGroupError as error:
        causes = "; ".join(
            f"rank {rank}: {type(cause).__name__}: {_last_line(cause)}"
            for rank, cause in sorted(error.worker_failures.items())
        )
        raise TrainingRunError(
            f"training {config.method} on {config.backbone} with {num_workers} workers failed "
            f"after {max_failures} allowed restart(s): {causes}. Checkpoints and worker logs "
            f"are under {storage_path / run_name}."
        ) from error
    summary = dict(result.return_value)
    summary["last_checkpoint"] = result.checkpoint.path if result.checkpoint else None
    return summary


def _last_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else repr(error)
