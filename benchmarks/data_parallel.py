"""Does data-parallel training pay? One IG epoch and one evaluation: one process vs Ray Train.

On Micro-Video-shaped data (37,692 users × 131,690 items, Zipf-like item popularity, play time
and duration labeled by the paper's finish-rate rule), at each ``--rows`` size and for each
``--optimizers`` choice, IG on ``--backbone`` (default GMF) runs

* ``1 process`` — the :class:`Trainer` without Ray (``train.py --workers 0``), in a fresh
  child process so its peak memory is its own;
* ``1 worker`` / ``2 workers`` — Ray Train workers running the product's own worker setup
  (``train_loop.setup_worker``: threads, shards, agreed step counts, the trainer);
* ``2 sharded`` — the same two workers with ``shard_tables=True``: each holds half of every
  embedding table's rows and their Adam moments (``invlearn_ray.optim.sharded_tables``).

Each run trains ``--epochs`` epochs (each followed by the validation evaluation) and reports
the fastest epoch and evaluation (the machine is shared: the best of a few is the least
disturbed). Printed per run: seconds, the ratios the targets are stated in, the payload one
worker puts into collectives per training step — measured for the touched-row exchange,
computed for the dense all-reduce it replaced (``4·(parameters + 1)`` bytes per gradient
reduction) — the collective calls and seconds per epoch, peak resident memory per worker, and
the bytes of validation and test rows each worker holds. For 2 workers it also measures what
one collective call costs between them (a 1-float all-reduce: pure latency; a gather of one
step's payload), so the share of an epoch that per-call latency alone takes is printed, not
guessed, and the sharded validation evaluation on its own (seconds, calls, bytes). Also per
run: the bytes of model and optimizer state one worker holds (its parameters — its rows of
sharded tables — Adam's moments and the dense update's gradient buffers).

``--past-one-worker ITEMS`` instead trains a GMF whose item table has ``ITEMS`` rows × 32 on
two torch processes (gloo, no Ray), sharded, IG meta steps with lazy Adam, under a per-worker
budget ``--worker-gb``: it prints the bytes a worker would hold replicated and sharded, skips
the replicated run when it exceeds the budget, and reports the sharded run's seconds per step
and peak resident memory per worker.

    python benchmarks/data_parallel.py                                 # 1 M and 9.5 M rows
    python benchmarks/data_parallel.py --rows 1000000 --optimizers lazy_adam --epochs 3
    python benchmarks/data_parallel.py --optimizers lazy_adam --batch-size 4096
    python benchmarks/data_parallel.py --past-one-worker 10000000 --worker-gb 3

``--batch-size`` sets both the labeled batch and the meta step's training-test batch (the
paper-scale profile trains at 4096). A bigger batch grows a step's forward and backward pass,
which the workers split, while a step's fixed costs (Python dispatch, each collective's latency)
stay — but what every worker repeats for the whole global batch (summing the gathered rows,
updating every touched row) grows with it too, so it did not help here (README, "Scaling").

Datasets are generated and built once into ``--data-dir`` (reused when present).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
import ray.train
import torch
from ray.train.torch import TorchTrainer
from torch.distributed.tensor import DTensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invlearn_ray.cli import comma_names, positive_int  # noqa: E402
from invlearn_ray.data import dataset_dir as dd  # noqa: E402
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory  # noqa: E402
from invlearn_ray.data.loading import load_dataset  # noqa: E402
from invlearn_ray.data.recdata import Interactions, RecData  # noqa: E402
from invlearn_ray.data.sources import SourceSpec  # noqa: E402
from invlearn_ray.data.splits import SplitOptions  # noqa: E402
from invlearn_ray.distributed.session import ensure_ray  # noqa: E402
from invlearn_ray.distributed.train_loop import (  # noqa: E402
    SHARDED_SPLITS,
    ExactSplitConfig,
    agreed_step_counts,
    read_shard_dataset,
    setup_worker,
    worker_rows,
)
from invlearn_ray.evaluation.evaluate import evaluate_split  # noqa: E402
from invlearn_ray.methods.inverse_gradient import InverseGradient  # noqa: E402
from invlearn_ray.models.backbones import BACKBONES, GMF, count_parameters  # noqa: E402
from invlearn_ray.optim.collective import ExchangeStats, TorchDistributedCollective  # noqa: E402
from invlearn_ray.optim.optimizers import DenseUpdate, LazyAdam  # noqa: E402
from invlearn_ray.optim.sharded_tables import shard_model  # noqa: E402
from invlearn_ray.training.batches import BatchSource  # noqa: E402
from invlearn_ray.training.config import EMBEDDING_OPTIMIZERS, TrainConfig  # noqa: E402
from invlearn_ray.training.trainer import Trainer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARDED = "2 sharded"
MICRO_VIDEO_USERS, MICRO_VIDEO_ITEMS = 37_692, 131_690
WORKER_COUNTS = (1, 2)


# ----------------------------------------------------------------------------- data


def micro_video_log(n_rows: int, seed: int = 0) -> pa.Table:
    """A Micro-Video-shaped interaction log: ``user, item, play_time, duration``.

    User activity is log-normal, item popularity Zipf-like (exponent 0.8), and the finish rate
    ``play_time / duration`` is a logistic function of a latent 8-dim user·item affinity plus
    logistic noise, tuned so that ~22% of rows finish above 80% and ~22% below 20% (the
    finish-rate rule labels ~44% of rows; the rest are unclear, observed-unlabeled rows).
    Time and memory are linear in ``n_rows``.
    """
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.0, MICRO_VIDEO_USERS)
    popularity = rng.permutation(1.0 / np.arange(1, MICRO_VIDEO_ITEMS + 1) ** 0.8)
    users = rng.choice(MICRO_VIDEO_USERS, n_rows, p=activity / activity.sum())
    items = rng.choice(MICRO_VIDEO_ITEMS, n_rows, p=popularity / popularity.sum())
    user_factors = rng.normal(0.0, 1.0, (MICRO_VIDEO_USERS, 8)).astype(np.float32)
    item_factors = rng.normal(0.0, 1.0, (MICRO_VIDEO_ITEMS, 8)).astype(np.float32)
    affinity = np.einsum("ij,ij->i", user_factors[users], item_factors[items]) / np.sqrt(8.0)
    finish = 1.0 / (1.0 + np.exp(-(1.2 * affinity + rng.logistic(0.0, 0.8, n_rows))))
    duration = rng.uniform(5.0, 60.0, n_rows)
    return pa.table(
        {"user": users, "item": items, "play_time": finish * duration, "duration": duration}
    )


def built_dataset(n_rows: int, data_dir: Path) -> Path:
    """The dataset of ``n_rows`` log rows, generated and built (no Ray) unless already there."""
    out = data_dir / f"micro_video_{n_rows}"
    if (out / dd.MANIFEST_FILE).is_file():
        return out
    log = data_dir / f"micro_video_{n_rows}_log.parquet"
    started = time.perf_counter()
    pq.write_table(micro_video_log(n_rows), log)
    source = SourceSpec.from_files("parquet", log, name=f"micro_video_{n_rows}")
    build_dataset_in_memory(BuildConfig(source=source, split=SplitOptions(seed=0), shards=4), out)
    print(f"built {out} in {time.perf_counter() - started:.0f} s", flush=True)
    return out


# ----------------------------------------------------------------------------- measuring


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def held_eval_mb(data: RecData) -> float:
    """Bytes of the validation and test rows this process holds."""
    tensors = [
        tensor
        for split in (data.valid, data.test)
        for tensor in vars(split).values()
        if isinstance(tensor, torch.Tensor)
    ]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def tensor_bytes(tensors: Any) -> int:
    """Bytes of the tensors in a nested dict/list (a DTensor counts its local rows)."""
    if isinstance(tensors, dict):
        return sum(tensor_bytes(value) for value in tensors.values())
    if isinstance(tensors, (list, tuple)):
        return sum(tensor_bytes(value) for value in tensors)
    if isinstance(tensors, DTensor):
        tensors = tensors.to_local()
    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    return 0


def state_bytes(trainer: Trainer) -> int:
    """The model and optimizer state one worker holds: parameters (its rows of sharded
    tables), Adam's moments, and the dense update's persistent gradient buffers."""
    update = getattr(trainer.optimizer, "inner", trainer.optimizer)
    held = tensor_bytes([param.detach() for param in trainer.model.parameters()])
    if isinstance(update, DenseUpdate):
        held += tensor_bytes(list(update.optimizer.state.values())) + tensor_bytes(update._buffers)
    elif isinstance(update, LazyAdam):
        held += tensor_bytes([update.first, update.second])
    return held


def epoch_stats(trainer: Trainer, epochs: int) -> dict[str, Any]:
    """Train ``epochs`` epochs; the fastest epoch and evaluation, and per-step counts."""
    records = [trainer.run_epoch(epoch) for epoch in range(epochs)]
    meta_steps = sum(len(choices) for choices in trainer.directions.log["epoch"])
    return {
        "state_mb": state_bytes(trainer) / 2**20,
        "epoch_s": min(record.train_seconds for record in records),
        "eval_s": min(record.eval_seconds for record in records),
        "supervised_steps": trainer.global_step / epochs,
        "meta_steps": meta_steps / epochs,
        "parameters": count_parameters(trainer.model),
        "backbone": trainer.config.backbone,
    }


def single_process(dataset: str, train: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The one-process run (in a child process: peak memory and threads of its own)."""
    data = load_dataset(dataset)
    stats = epoch_stats(Trainer(TrainConfig.from_dict(train), data), epochs)
    stats.update(
        threads=torch.get_num_threads(), peak_rss_mb=peak_rss_mb(), eval_mb=held_eval_mb(data)
    )
    return stats


def collective_latency_ms(payload_bytes: float, calls: int = 200) -> dict[str, float]:
    """Milliseconds per call of a 1-float all-reduce (the latency every call pays) and of an
    all-gather of one step's payload, between this run's workers (after 20 warm-up calls)."""
    world = torch.distributed.get_world_size()
    tiny = torch.zeros(1)
    step = torch.zeros(max(1, int(payload_bytes) // 4))
    gathered = torch.empty(world * len(step))

    def timed(call) -> float:
        for _ in range(20):
            call()
        torch.distributed.barrier()
        started = time.perf_counter()
        for _ in range(calls):
            call()
        return (time.perf_counter() - started) / calls * 1e3

    return {
        "latency_ms": timed(lambda: torch.distributed.all_reduce(tiny)),
        "step_gather_ms": timed(lambda: torch.distributed.all_gather_single(gathered, step)),
    }


def ray_worker(config: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Ray Train worker: the product's worker setup, timed; rank 0 returns every rank's stats.

    The collectives of the epochs' evaluations and loss reductions are taken out of the
    per-step figures: one more validation evaluation is measured on its own (seconds, calls,
    bytes) and subtracted once per epoch with the epoch's loss all-reduce (1 call, 8 bytes).
    """
    worker = setup_worker(config)
    epochs = config["epochs"]
    stats = epoch_stats(worker.trainer, epochs)
    exchange = worker.collective.stats
    calls, payload, seconds = exchange.calls, exchange.payload_bytes, exchange.seconds
    torch.distributed.barrier()  # time the evaluation, not one worker waiting for the other
    started = time.perf_counter()
    # What an epoch's evaluation does (sharded tables: the scored rows' lookup and the
    # largest weight's all-gather are part of it).
    scoring = worker.trainer.epoch_scoring_model()
    worker.trainer.largest_weight()
    evaluate_split(scoring, worker.data.valid, collective=worker.collective)
    eval_s = time.perf_counter() - started
    eval_calls, eval_bytes = exchange.calls - calls, exchange.payload_bytes - payload
    eval_collective_s = exchange.seconds - seconds
    steps = epochs * (stats["supervised_steps"] + stats["meta_steps"])
    train_payload = payload - epochs * (eval_bytes + 8)
    stats.update(
        threads=torch.get_num_threads(),
        calls_per_epoch=(calls - epochs * (eval_calls + 1)) / epochs,
        bytes_per_step=train_payload / steps,
        collective_s=(seconds - epochs * eval_collective_s) / epochs,
        eval_alone_s=eval_s,
        eval_calls=eval_calls,
        eval_bytes=eval_bytes,
        peak_rss_mb=peak_rss_mb(),
        eval_mb=held_eval_mb(worker.data),
    )
    if worker.world_size > 1:
        stats.update(collective_latency_ms(train_payload / steps))
    everyone: list[dict[str, Any] | None] = [None] * worker.world_size
    torch.distributed.all_gather_object(everyone, stats)
    return everyone if worker.rank == 0 else None


def ray_run(dataset: Path, train: dict[str, Any], workers: int, epochs: int) -> dict[str, Any]:
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config={"dataset": str(dataset), "train": train, "epochs": epochs},
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, resources_per_worker={"CPU": 0.5}
        ),
        run_config=ray.train.RunConfig(storage_path=str(dataset.parent / "ray")),
        datasets={split: read_shard_dataset(dataset, split) for split in SHARDED_SPLITS},
        dataset_config=ExactSplitConfig(),
    )
    ranks = trainer.fit().return_value
    slowest = {key: max(rank[key] for rank in ranks) for key in ("epoch_s", "eval_s")}
    return {
        **ranks[0],
        **slowest,
        "peak_rss_mb": max(rank["peak_rss_mb"] for rank in ranks),
        "eval_mb": max(rank["eval_mb"] for rank in ranks),
    }


def dense_bytes_per_step(stats: dict[str, Any]) -> float:
    """Payload per worker per step of the dense all-reduce: every parameter and the count, once
    per supervised step and twice per meta step (dual and test gradient), plus the meta step's
    three losses and count."""
    supervised, meta = stats["supervised_steps"], stats["meta_steps"]
    floats = (supervised + 2 * meta) * (stats["parameters"] + 1) + 4 * meta
    return 4.0 * floats / (supervised + meta)


# ----------------------------------------------------------------------------- report


def report(rows: int, optimizer: str, batch_size: int, runs: dict[str, dict[str, Any]]) -> None:
    single, one, two = runs["1 process"], runs["1 worker"], runs["2 workers"]
    sharded = runs[SHARDED]
    backbone = runs["1 process"]["backbone"]
    print(f"\n{rows:,} rows, {backbone} IG, embedding_optimizer={optimizer}, batch {batch_size}")
    header = (
        f"{'run':<10} {'thr':>3} {'epoch s':>8} {'eval s':>7} {'vs 1proc':>8} {'vs 1wkr':>8} "
        f"{'B/step sent':>12} {'B/step dense':>13} {'calls/ep':>8} {'coll s/ep':>9} "
        f"{'peak MB':>8} {'eval MB':>8} {'state MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, stats in runs.items():
        exchanged = name in ("2 workers", SHARDED)
        sent = f"{stats['bytes_per_step']:12,.0f}" if exchanged else f"{'-':>12}"
        dense = f"{dense_bytes_per_step(stats):13,.0f}" if exchanged else f"{'-':>13}"
        print(
            f"{name:<10} {stats['threads']:>3} {stats['epoch_s']:8.2f} {stats['eval_s']:7.3f} "
            f"{stats['epoch_s'] / single['epoch_s']:8.2f} {stats['epoch_s'] / one['epoch_s']:8.2f} "
            f"{sent} {dense} {stats.get('calls_per_epoch', 0):8.0f} "
            f"{stats.get('collective_s', 0):9.2f} {stats['peak_rss_mb']:8.0f} "
            f"{stats['eval_mb']:8.1f} {stats['state_mb']:8.1f}"
        )
    steps = two["supervised_steps"] + two["meta_steps"]
    latency_s = two["calls_per_epoch"] * two["latency_ms"] / 1e3
    print(
        f"2 workers' collectives: {steps:.0f} steps and {two['calls_per_epoch']:.0f} calls per "
        f"epoch; a 1-float all-reduce costs {two['latency_ms']:.3f} ms, a step's gather "
        f"{two['step_gather_ms']:.3f} ms: latency alone {latency_s:.2f} s of the "
        f"{two['epoch_s']:.2f} s epoch, in collectives {two['collective_s']:.2f} s (transfer "
        f"and waiting for the other worker); one process's whole epoch {single['epoch_s']:.2f} s"
    )
    print(
        "evaluation (validation, alone, after a barrier): "
        f"1 worker {one['eval_alone_s']:.3f} s, 2 workers "
        f"{two['eval_alone_s']:.3f} s, {two['eval_calls']} calls, {two['eval_bytes']:,} bytes "
        "sent per worker"
    )
    print(
        f"targets: 2 workers / 1 process {two['epoch_s'] / single['epoch_s']:.2f} (<= 1.3); "
        f"2 workers / 1 worker {two['epoch_s'] / one['epoch_s']:.2f} (<= 1.0); "
        f"evaluation alone 2 / 1 worker {two['eval_alone_s'] / one['eval_alone_s']:.2f} (<= 0.6); "
        f"eval rows held 2 / 1 worker {two['eval_mb'] / one['eval_mb']:.2f} (~0.5)",
        flush=True,
    )
    print(
        f"sharded targets: model+optimizer state per worker / 1 process "
        f"{sharded['state_mb'] / single['state_mb']:.2f} (<= 0.6); IG epoch 2 sharded / 1 process "
        f"{sharded['epoch_s'] / single['epoch_s']:.2f} (<= 1.3); 2 sharded / 2 replicated "
        f"{sharded['epoch_s'] / two['epoch_s']:.2f}; bytes/step sharded / replicated "
        f"{sharded['bytes_per_step'] / two['bytes_per_step']:.2f}; calls/epoch "
        f"{sharded['calls_per_epoch']:.0f} vs {two['calls_per_epoch']:.0f}",
        flush=True,
    )


# ----------------------------------------------------------------------------- interleaved


def interleaved_rank(rank: int, dataset: str, train: dict[str, Any], rounds: int, folder: str):
    """One of two gloo processes (no Ray) timing, round after round, an epoch of the
    replicated pair, of the sharded pair and — rank 0 alone, both cores, while rank 1 sleeps —
    of one process: a shared machine's load then falls on all three alike."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2
    )
    try:
        config = TrainConfig.from_dict(train)
        data = load_dataset(dataset)

        def cut(split: Interactions) -> Interactions:  # ExactSplitConfig's row ranges
            n = len(split)
            return split.take(torch.arange(round(rank * n / 2), round((rank + 1) * n / 2)))

        rows = worker_rows(config, data, cut(data.train_train), cut(data.train_test), rank, 2)
        steps, meta_steps = agreed_step_counts(rows, config, 2, torch.device("cpu"))
        pairs = {
            name: Trainer(
                config.replace(shard_tables=sharded),
                data,
                TorchDistributedCollective(),
                rows=rows,
                batch_source=BatchSource(rows, config, rank, 2, steps, meta_steps),
            )
            for name, sharded in (("2 workers", False), (SHARDED, True))
        }
        single = Trainer(config, data) if rank == 0 else None
        seconds: dict[str, list[float]] = {name: [] for name in ("1 process", *pairs)}
        for epoch in range(rounds):
            for name, trainer in pairs.items():
                torch.set_num_threads(1)
                torch.distributed.barrier()
                seconds[name].append(trainer.run_epoch(epoch).train_seconds)
            torch.distributed.barrier()
            marker = Path(folder) / f"single_{epoch}"
            if single is not None:
                torch.set_num_threads(2)
                seconds["1 process"].append(single.run_epoch(epoch).train_seconds)
                marker.touch()
            while not marker.exists():  # sleeping, not in a gloo barrier (which spins a core)
                time.sleep(0.05)
        if rank == 0:
            torch.save(seconds, Path(folder) / "seconds.pt")
    finally:
        torch.distributed.destroy_process_group()


def interleaved(dataset: Path, train: dict[str, Any], rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        torch.multiprocessing.spawn(
            interleaved_rank, args=(str(dataset), train, rounds, folder), nprocs=2
        )
        seconds = torch.load(Path(folder) / "seconds.pt")
    best = {name: min(values) for name, values in seconds.items()}
    print(
        f"interleaved epochs (gloo, no Ray; {rounds} rounds, "
        f"{train['embedding_optimizer']}), seconds per epoch, best / all: "
        + "; ".join(
            f"{name} {best[name]:.2f} / {', '.join(f'{v:.2f}' for v in values)}"
            for name, values in seconds.items()
        )
    )
    print(
        f"interleaved ratios: 2 workers / 1 process {best['2 workers'] / best['1 process']:.2f}, "
        f"2 sharded / 1 process {best[SHARDED] / best['1 process']:.2f} (<= 1.3), "
        f"2 sharded / 2 workers {best[SHARDED] / best['2 workers']:.2f}",
        flush=True,
    )


# ----------------------------------------------------------------------------- past one worker


def held_gb(users: int, items: int, dim: int, world_size: int) -> float:
    """GB of a GMF's tables and lazy Adam's two moments on one of ``world_size`` sharding
    workers (``world_size=1``: a replica). The head is a few floats."""
    rows = math.ceil(users / world_size) + math.ceil(items / world_size)
    return 3 * rows * dim * 4 / 1e9


def past_one_worker_rank(rank: int, items: int, steps: int, batch: int, folder: str) -> None:
    """One of two gloo processes: a sharded GMF (Micro-Video users × ``items``), IG meta steps
    on random rows with lazy Adam; saves its timings and memory to ``folder``."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2
    )
    try:
        torch.set_num_threads(1)
        collective = TorchDistributedCollective()
        runtime_gb = peak_rss_mb() * 2**20 / 1e9
        started = time.perf_counter()
        torch.manual_seed(0)
        model, tables = shard_model(lambda: GMF(MICRO_VIDEO_USERS, items, 32), collective)
        update = tables.update(LazyAdam(tables.local_view(model), lr=1e-3))
        build_s = time.perf_counter() - started
        step = InverseGradient(
            model, update, dual_lr=1e-4, step_rule="sign", collective=collective, tables=tables
        )
        generator = torch.Generator().manual_seed(rank)

        def draw(high: int) -> torch.Tensor:
            return torch.randint(high, (batch // 2,), generator=generator)

        warmup = 3
        for index in range(warmup + steps):
            if index == warmup:
                torch.distributed.barrier()
                collective.stats = ExchangeStats()
                started = time.perf_counter()
            labels = torch.randint(2, (batch // 2,), generator=generator).float()
            step.step(
                draw(MICRO_VIDEO_USERS), draw(items), draw(MICRO_VIDEO_USERS), draw(items), labels
            )
        step_s = (time.perf_counter() - started) / steps
        state = tensor_bytes([param.detach() for param in model.parameters()])
        state += tensor_bytes([update.inner.first, update.inner.second])
        torch.save(
            {
                "build_s": build_s,
                "step_s": step_s,
                "bytes_per_step": collective.stats.payload_bytes / steps,
                "state_gb": state / 1e9,
                "item_rows": len(tables.local["item_embedding"]),
                "peak_rss_gb": peak_rss_mb() * 2**20 / 1e9,
                "runtime_gb": runtime_gb,
            },
            Path(folder) / f"rank{rank}.pt",
        )
    finally:
        torch.distributed.destroy_process_group()


def past_one_worker(items: int, worker_gb: float, steps: int, batch: int) -> None:
    """Train a table past one worker's budget, sharded on two processes (module docstring)."""
    replicated = held_gb(MICRO_VIDEO_USERS, items, 32, 1)
    sharded = held_gb(MICRO_VIDEO_USERS, items, 32, 2)
    print(
        f"GMF {MICRO_VIDEO_USERS:,} users × {items:,} items × 32, lazy Adam (weights + 2 "
        f"moments): {replicated:.2f} GB per worker replicated, {sharded:.2f} GB sharded on 2 "
        f"(budget {worker_gb:g} GB per worker)"
    )
    for rows in (30_000_000, 100_000_000):
        print(
            f"  at {rows:,} items: replicated {held_gb(MICRO_VIDEO_USERS, rows, 32, 1):.2f} GB, "
            + ", ".join(
                f"{w} sharded {held_gb(MICRO_VIDEO_USERS, rows, 32, w):.2f} GB" for w in (2, 4, 8)
            )
        )
    if replicated > worker_gb:
        print(f"replicated: {replicated:.2f} GB > {worker_gb:g} GB per worker, not run")
    if sharded > worker_gb:
        print(f"sharded: {sharded:.2f} GB > {worker_gb:g} GB per worker, not run")
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.multiprocessing.spawn(
            past_one_worker_rank, args=(items, steps, batch, folder), nprocs=2
        )
        ranks = [torch.load(Path(folder) / f"rank{rank}.pt") for rank in range(2)]
    for rank, stats in enumerate(ranks):
        print(
            f"sharded rank {rank}: {stats['item_rows']:,} item rows, tables + moments "
            f"{stats['state_gb']:.2f} GB (within {worker_gb:g}: {stats['state_gb'] <= worker_gb}), "
            f"peak resident {stats['peak_rss_gb']:.2f} GB of which {stats['runtime_gb']:.2f} GB "
            f"before the model (torch, gloo), built in {stats['build_s']:.1f} s, "
            f"{stats['step_s'] * 1e3:.1f} ms per IG meta step (global batch {batch}), "
            f"{stats['bytes_per_step']:,.0f} bytes sent per step",
            flush=True,
        )


def ig_config(args: argparse.Namespace, optimizer: str) -> dict[str, Any]:
    """The IG configuration every mode of this benchmark times."""
    return TrainConfig(
        method="ig",
        backbone=args.backbone,
        epochs=args.epochs,
        embedding_optimizer=optimizer,
        batch_size=args.batch_size,
        test_batch_size=args.batch_size,
    ).to_dict()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rows",
        type=comma_names,
        default=("1000000", "9500000"),
        help="log sizes, comma-separated (default: 1000000,9500000)",
    )
    parser.add_argument(
        "--optimizers",
        type=comma_names,
        default=EMBEDDING_OPTIMIZERS,
        help=f"TrainConfig.embedding_optimizer values (default: {','.join(EMBEDDING_OPTIMIZERS)})",
    )
    parser.add_argument("--epochs", type=positive_int, default=2, help="epochs per run (best)")
    parser.add_argument(
        "--backbone",
        default="gmf",
        choices=sorted(BACKBONES),
        help="the model (default gmf: almost no compute beside its table rows)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=TrainConfig.batch_size,
        help=f"labeled and training-test rows per step (default: {TrainConfig.batch_size})",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=REPO_ROOT / "datasets" / "data_parallel_bench"
    )
    parser.add_argument("--num-cpus", type=positive_int, default=None, help="CPUs of local Ray")
    parser.add_argument(
        "--past-one-worker",
        type=positive_int,
        default=None,
        metavar="ITEMS",
        help="only train a GMF with this many item rows sharded on 2 processes (no Ray)",
    )
    parser.add_argument(
        "--worker-gb", type=float, default=3.0, help="per-worker budget of --past-one-worker"
    )
    parser.add_argument(
        "--steps", type=positive_int, default=50, help="timed IG steps of --past-one-worker"
    )
    parser.add_argument(
        "--interleaved",
        action="store_true",
        help="only time 1 process, 2 workers and 2 sharded epoch by epoch in turn (no Ray)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.optimizers) - set(EMBEDDING_OPTIMIZERS))
    if unknown:
        parser.error(f"unknown optimizer(s) {unknown}; valid: {list(EMBEDDING_OPTIMIZERS)}")
    sizes = [positive_int(text) for text in args.rows]
    if args.past_one_worker:
        past_one_worker(args.past_one_worker, args.worker_gb, args.steps, args.batch_size)
        return
    if args.interleaved:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        for rows in sizes:
            dataset = built_dataset(rows, args.data_dir)
            for optimizer in args.optimizers:
                train = ig_config(args, optimizer)
                print(f"\n{rows:,} rows, {args.backbone} IG, batch {args.batch_size}")
                interleaved(dataset, train, args.epochs)
        return

    args.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_ray(num_cpus=args.num_cpus)
    ray.data.DataContext.get_current().enable_progress_bars = False
    spawn = multiprocessing.get_context("spawn")
    for rows in sizes:
        # Child processes: the build's and the one-process run's memory is returned on exit
        # (the Ray workers share this machine's memory with the driver).
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as child:
            dataset = child.submit(built_dataset, rows, args.data_dir).result()
        for optimizer in args.optimizers:
            train = ig_config(args, optimizer)
            runs: dict[str, dict[str, Any]] = {}
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as child:
                runs["1 process"] = child.submit(
                    single_process, str(dataset), train, args.epochs
                ).result()
            for workers in WORKER_COUNTS:
                name = f"{workers} worker{'s' if workers > 1 else ''}"
                runs[name] = ray_run(dataset, train, workers, args.epochs)
            runs[SHARDED] = ray_run(dataset, {**train, "shard_tables": True}, 2, args.epochs)
            report(rows, optimizer, args.batch_size, runs)


if __name__ == "__main__":
    main()
