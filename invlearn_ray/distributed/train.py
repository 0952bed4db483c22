"""One training run on a built dataset: one process, or N data-parallel Ray Train workers.

:func:`run_training` is the single entry point. With ``num_workers=0`` it runs the plain
:class:`~invlearn_ray.training.trainer.Trainer` in this process and never imports Ray (the GPU
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
* checkpoints live in ``<storage_path>/<run_name>`` (default: ``ray/<output folder name>``
  in the run's staging folder, ``<output_dir>/ray/...`` once published). Ray Train resumes a
  run whose folder holds checkpoints, so re-running the same command after a crash continues
  where it stopped; :func:`~invlearn_ray.training.run_folder.claim_run_dir` refuses a folder
  that holds a *different* run.

Both paths write the same run folder (:mod:`invlearn_ray.training.run_folder`). A local
``output_dir`` is written into a staging folder beside it and renamed into place when the run
is complete. An object-store ``output_dir`` (``s3://…``, what a multi-node cluster needs: rank 0
may run on any node) is written by whichever process trained — rank 0 on its own node — into a
temporary folder and uploaded with the commit file last; its checkpoints default to
``<output_dir>.ray/<run name>`` in the same store, so a worker group restarted on other nodes
finds them. A finished run already in ``output_dir`` is refused before any work unless
``overwrite``. The dataset may be local or in an object store alike.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from invlearn_ray import storage
from invlearn_ray.data import dataset_dir as dd
from invlearn_ray.data import publishing
from invlearn_ray.data.loading import load_dataset
from invlearn_ray.data.manifest import Manifest
from invlearn_ray.errors import UserError
from invlearn_ray.progress import progress_bar
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.run_folder import (
    RAY_STORAGE_DIR,
    check_can_publish,
    check_claim,
    claim_run_dir,
    publish_run,
    remove_stale_runs,
    staging_dir,
    upload_run,
    write_run_outputs,
)
from invlearn_ray.training.sinks import ConsoleSink
from invlearn_ray.training.trainer import (
    Trainer,
    TrainingDiverged,
    check_unlabeled_rows,
)

logger = logging.getLogger(__name__)

TEST_SWITCHES = (
    "_test_fail_once_at_epoch",
    "_test_fail_rank",
    "_test_fail_marker",
    "_test_kill",
    "_test_record_batches_dir",
)
"""Test-only keys of the worker config (see ``train_loop``); nothing else may start with
``_test_``, so a misspelt switch cannot silently do nothing."""


class TrainingRunError(RuntimeError, UserError):
    """A Ray Train run failed beyond its allowed restarts; the message names the worker error."""


def run_training(
    dataset_path: storage.Location,
    config: TrainConfig,
    num_workers: int,
    output_dir: storage.Location,
    use_gpu: bool = False,
    cpus_per_worker: float = 0.5,
    max_failures: int = 1,
    storage_path: storage.Location | None = None,
    num_to_keep: int = 2,
    run_name: str | None = None,
    test_switches: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train ``config`` on the dataset at ``dataset_path`` and publish the run's outputs.

    Args:
        dataset_path: a folder written by ``pipelines/build_data.py``.
        config: what to train.
        num_workers: data-parallel Ray Train workers; 0 runs one process without Ray.
        output_dir: where the selected model and the metrics go (see the module docstring).
        use_gpu: one GPU per worker (nccl); CPU workers use gloo.
        cpus_per_worker: CPUs reserved per worker (fractions leave room for Ray Data's reads).
        max_failures: worker-group restarts allowed, each resuming from the last checkpoint.
        storage_path: where Ray Train keeps checkpoints, outside ``output_dir`` (default: in
            the run's staging folder, published as ``<output_dir>/ray``).
        num_to_keep: checkpoints kept (the newest ones).
        run_name: Ray Train run name (default: the output folder's name).
        test_switches: test-only worker switches, keys from :data:`TEST_SWITCHES`.
        overwrite: replace a finished run already in ``output_dir``.

    Returns:
        The run's summary: ``valid`` and ``test`` metrics of the selected model,
        ``best_epoch``, ``epochs_run``, ``resumed_from_epoch`` (None unless the final attempt
        resumed from a checkpoint), ``output_dir``; Ray runs add ``last_checkpoint``.

    Raises:
        ValueError: ``num_workers < 0``, an unknown test switch, or a ``storage_path`` inside
            ``output_dir`` (the run folder is replaced as a whole when it is published).
        DatasetFormatError: the dataset is not one, or changed since its build.
        UnsuitableDatasetError: the config cannot train on the dataset
            (:func:`check_dataset_fits`).
        RunExistsError: ``output_dir`` holds a finished run and ``overwrite`` is False.
        RunConflictError: the Ray Train run folder holds another run's checkpoints
            (:func:`~invlearn_ray.training.run_folder.claim_run_dir`).
        TrainingRunError: a Ray run failed more than ``max_failures`` times.
        TrainingDiverged: the loss or weights left their bounds (``TrainConfig.max_train_loss``
            / ``max_weight``); nothing is published, and no Ray run is restarted for it.
    """
    unknown = sorted(set(test_switches or {}) - set(TEST_SWITCHES))
    if unknown:
        raise ValueError(f"unknown test switch(es) {unknown}; valid: {list(TEST_SWITCHES)}")
    # Fail here, not in every worker, on a bad dataset or one the config cannot train on.
    check_run(dataset_path, config, num_workers, output_dir, overwrite, storage_path, run_name)
    dataset_path, output_dir = storage.absolute(dataset_path), storage.absolute(output_dir)
    ray_options = {
        "use_gpu": use_gpu,
        "cpus_per_worker": cpus_per_worker,
        "max_failures": max_failures,
        "num_to_keep": num_to_keep,
        "test_switches": test_switches or {},
    }
    if not storage.is_local(output_dir):
        return _train_to_object_store(
            dataset_path,
            config,
            num_workers,
            output_dir,
            storage_path=storage_path,
            run_name=run_name,
            **ray_options,
        )
    output_dir = Path(output_dir)
    remove_stale_runs(output_dir.parent)
    staging = staging_dir(output_dir)
    inputs = [Path(dataset_path)] if storage.is_local(dataset_path) else []
    if num_workers == 0:
        # A one-process run has nothing to resume: whatever an interrupted run left goes.
        publishing.discard(staging)
        try:
            summary = train_single_process(dataset_path, config, staging, output_dir, use_gpu)
            publish_run(staging, output_dir, inputs=inputs)
        except BaseException:
            publishing.discard(staging)
            raise
        return summary
    storage_path, run_name = ray_storage(output_dir, storage_path, run_name)
    claim_run_dir(
        storage.join(storage_path, run_name),
        _run_description(dataset_path, config, num_workers),
    )
    # A failed Ray run keeps its staging folder: its checkpoints let the same command resume.
    try:
        summary = _train_with_ray(
            dataset_path,
            config,
            num_workers,
            staging,
            output_dir,
            storage_path=storage_path,
            run_name=run_name,
            **ray_options,
        )
    except TrainingDiverged:
        # Nothing to resume (a rerun must change its settings, and claim_run_dir would refuse
        # the changed run beside these checkpoints).
        storage.delete_tree(storage.join(storage_path, run_name))
        publishing.discard(staging)
        raise
    publish_run(staging, output_dir, inputs=inputs)
    checkpoint = summary["last_checkpoint"]
    if checkpoint and storage.is_local(checkpoint) and Path(checkpoint).is_relative_to(staging):
        summary["last_checkpoint"] = str(output_dir / Path(checkpoint).relative_to(staging))
    return summary


def _train_to_object_store(
    dataset_path: str,
    config: TrainConfig,
    num_workers: int,
    output_dir: str,
    *,
    storage_path: storage.Location | None,
    run_name: str | None,
    **ray_options: Any,
) -> dict[str, Any]:
    """:func:`run_training` into an object store: the process that trained uploads the run
    (commit file last); a Ray run's checkpoints go to the same store."""
    if num_workers == 0:
        with tempfile.TemporaryDirectory(prefix="invlearn-run-") as folder:
            summary = train_single_process(
                dataset_path, config, Path(folder), output_dir, ray_options["use_gpu"]
            )
            upload_run(Path(folder), output_dir)
        return summary
    storage_path, run_name = ray_storage(output_dir, storage_path, run_name)
    run_dir = storage.join(storage_path, run_name)
    claim_run_dir(run_dir, _run_description(dataset_path, config, num_workers))
    try:
        return _train_with_ray(
            dataset_path,
            config,
            num_workers,
            None,
            output_dir,
            storage_path=storage_path,
            run_name=run_name,
            **ray_options,
        )
    except TrainingDiverged:
        storage.delete_tree(run_dir)
        raise


def check_run(
    dataset_path: str | Path,
    config: TrainConfig,
    num_workers: int,
    output_dir: str | Path,
    overwrite: bool = False,
    storage_path: str | Path | None = None,
    run_name: str | None = None,
) -> None:
    """Every check :func:`run_training` makes before it starts work, with nothing written —
    so a command line can make them before it starts Ray (arguments as there).

    Raises:
        ValueError: ``num_workers < 0`` or a ``storage_path`` inside ``output_dir``.
        DatasetFormatError, UnsuitableDatasetError, RunExistsError, RunConflictError: see
            :func:`run_training`.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 (0 = one process, no Ray), got {num_workers}")
    dataset_path, output_dir = storage.absolute(dataset_path), storage.absolute(output_dir)
    check_dataset_fits(config, dd.verified_manifest(dataset_path))
    check_can_publish(output_dir, overwrite)
    if num_workers:
        storage_path, run_name = ray_storage(output_dir, storage_path, run_name)
        check_claim(
            storage.join(storage_path, run_name),
            _run_description(dataset_path, config, num_workers),
        )


def ray_storage(
    output_dir: str, storage_path: storage.Location | None, run_name: str | None
) -> tuple[str, str]:
    """Where a Ray run of ``output_dir`` keeps its checkpoints: ``(storage path, run name)``.

    Default: locally ``ray/`` in the run's staging folder (published as ``<output_dir>/ray``);
    in an object store ``<output_dir>.ray`` beside the run folder, whose commit lists the run's
    own files only.

    Raises:
        ValueError: ``storage_path`` lies inside a local ``output_dir``.
    """
    name = run_name or storage.name(output_dir)
    if not storage.is_local(output_dir):
        return storage.absolute(storage_path or f"{output_dir}.ray"), name
    output = Path(output_dir)
    default = staging_dir(output) / RAY_STORAGE_DIR
    location = storage.absolute(storage_path) if storage_path else str(default)
    if storage.is_local(location) and Path(location).is_relative_to(output):
        raise ValueError(
            f"storage path {location} lies inside the output folder {output}, which is "
            "replaced as a whole when the run is published; leave it unset (checkpoints then "
            f"end up in {output / RAY_STORAGE_DIR}) or choose a folder outside"
        )
    return location, name


def _run_description(dataset_path: str, config: TrainConfig, num_workers: int) -> dict:
    return {"dataset": str(dataset_path), "train": config.to_dict(), "num_workers": num_workers}


def check_dataset_fits(config: TrainConfig, manifest: Manifest) -> None:
    """What can be known about ``config`` on a dataset from its (verified) manifest alone.

    Raises:
        UnsuitableDatasetError: the method reads observed-unlabeled rows only, and the dataset
            has none.
    """
    check_unlabeled_rows(config, manifest.rows("unclear"), manifest.name)


def train_single_process(
    dataset_path: storage.Location,
    config: TrainConfig,
    folder: Path,
    output_dir: storage.Location,
    use_gpu: bool = False,
) -> dict[str, Any]:
    """The reference path: :meth:`Trainer.fit` in this process, no Ray; writes the run's
    files into ``folder`` (published as ``output_dir`` by the caller)."""
    if use_gpu and not torch.cuda.is_available():
        raise RuntimeError("use_gpu was requested but torch sees no CUDA device")
    device = torch.device("cuda" if use_gpu else "cpu")
    data = load_dataset(dataset_path, device)
    with progress_bar(logger, config.epochs, desc="epochs", unit="epoch") as bar:
        result = Trainer(config, data).fit(ConsoleSink(bar, config.select_metric, logger))
    return write_run_outputs(result, folder, dataset_path, data, workers=0, output_dir=output_dir)


def _train_with_ray(
    dataset_path: str,
    config: TrainConfig,
    num_workers: int,
    staging: Path | None,
    output_dir: storage.Location,
    *,
    use_gpu: bool,
    cpus_per_worker: float,
    max_failures: int,
    storage_path: str,
    num_to_keep: int,
    run_name: str,
    test_switches: dict[str, Any],
) -> dict[str, Any]:
    # Ray (and the worker loop, which imports it) only on this path: one-process training must
    # run where Ray is not installed.
    import ray.train

    from invlearn_ray.distributed.session import check_reachable_from_workers
    from invlearn_ray.distributed.train_loop import build_torch_trainer, run_summary

    # Workers on other nodes read the dataset, and rank 0 may write the run from any node.
    check_reachable_from_workers(dataset_path, "--dataset")
    check_reachable_from_workers(str(output_dir), "--out")
    check_reachable_from_workers(storage_path, "--storage-path")

    loop_config = {"train": config.to_dict(), "output_dir": str(output_dir), **test_switches}
    if staging is not None:
        loop_config["staging_dir"] = str(staging)
    trainer = build_torch_trainer(
        dataset_path,
        loop_config,
        num_workers=num_workers,
        storage_path=str(storage_path),
        run_name=run_name,
        cpus_per_worker=cpus_per_worker,
        use_gpu=use_gpu,
        max_failures=max_failures,
        num_to_keep=num_to_keep,
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
            f"are under {storage.join(storage_path, run_name)}."
        ) from error
    summary = run_summary(result.return_value)
    summary["last_checkpoint"] = result.checkpoint.path if result.checkpoint else None
    return summary


def _last_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else repr(error)
