"""What a checkpoint of sharded tables costs each worker: per-rank files vs the gathered state.

Two gloo processes (no Ray) train one epoch of sharded GMF IG on the tiny synthetic dataset
with its item table widened to ``--items`` rows × ``--dim`` (so the tables, not the data,
dominate), then checkpoint it one of two ways, each in fresh processes:

* ``sharded`` — :class:`~invlearn_ray.distributed.reporting.CheckpointSink` as a Ray Train
  worker runs it: every rank writes its rows (tables, best epoch's tables, Adam moments),
  rank 0 the rest; then :func:`~invlearn_ray.distributed.reporting.restore_state` and
  ``Trainer.load_state_dict`` read each rank's rows back;
* ``gathered`` — what checkpoints did before: every rank gathers ``Trainer.state_dict()``
  (whole tables and moments), rank 0 writes it; then every rank loads the whole state and
  cuts its rows.

Printed per rank: the resident memory before the write, and the peak above it while writing
and while restoring (the kernel's high-water mark, reset through ``/proc/self/clear_refs``
just before each), and the bytes written. The ``sharded`` processes also measure an epoch's
validation scoring both ways: the model of the scored rows (``Trainer.epoch_scoring_model``,
what an epoch scores now) and the gathered whole model (``Trainer.scoring_model``, what it
scored before).

    python benchmarks/sharded_checkpoint.py --items 2000000
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invlearn_ray.cli import positive_int  # noqa: E402
from invlearn_ray.data.build import make_synthetic_recdata  # noqa: E402
from invlearn_ray.data.synthetic import SyntheticConfig  # noqa: E402
from invlearn_ray.distributed.reporting import (  # noqa: E402
    CHECKPOINT_FILE,
    CheckpointSink,
    restore_state,
)
from invlearn_ray.evaluation.evaluate import evaluate_split  # noqa: E402
from invlearn_ray.optim.collective import TorchDistributedCollective  # noqa: E402
from invlearn_ray.training.config import TrainConfig  # noqa: E402
from invlearn_ray.training.trainer import Trainer  # noqa: E402

WORLD = 2
MODES = ("sharded", "gathered")


def resident_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (the peak since the last reset) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def reset_peak() -> float:
    """Reset the kernel's resident high-water mark to the current resident set; return it."""
    Path("/proc/self/clear_refs").write_text("5")
    return resident_mb("VmRSS")


def trained(items: int, dim: int, optimizer: str) -> Trainer:
    """A sharded trainer after one epoch (so Adam's moments and the best epoch exist)."""
    data = make_synthetic_recdata(SyntheticConfig.preset("tiny"))
    data = dataclasses.replace(data, n_items=items, truth=None)
    config = TrainConfig(
        method="ig",
        backbone="gmf",
        embedding_dim=dim,
        embedding_optimizer=optimizer,
        step_rule="sign",
        shard_tables=True,
        epochs=2,
        batch_size=64,
        test_batch_size=16,
    )
    trainer = Trainer(config, data, TorchDistributedCollective())
    trainer.run_epoch(0)
    return trainer


def write_sharded(trainer: Trainer, folder: Path, rank: int) -> None:
    def keep(metrics: dict, checkpoint: ray.train.Checkpoint) -> None:
        for path in Path(checkpoint.path).iterdir():
            path.rename(folder / path.name)  # what Ray Train's upload copies
        torch.distributed.barrier()

    sink = CheckpointSink(keep, rank, WORLD)
    sink.report(trainer.history[-1], trainer)


def write_gathered(trainer: Trainer, folder: Path, rank: int) -> None:
    state = trainer.state_dict()  # every rank: the gather
    if rank == 0:
        torch.save({"trainer": state}, folder / CHECKPOINT_FILE)
    torch.distributed.barrier()


def read_sharded(trainer: Trainer, folder: Path, rank: int) -> None:
    checkpoint = ray.train.Checkpoint.from_directory(str(folder))
    trainer.load_state_dict(restore_state(checkpoint, trainer.config, WORLD, rank=rank))


def read_gathered(trainer: Trainer, folder: Path, rank: int) -> None:
    state = torch.load(folder / CHECKPOINT_FILE, weights_only=True)["trainer"]
    trainer.load_state_dict(state)


def scoring_peaks(trainer: Trainer) -> dict[str, float]:
    """Peak resident memory above the current while building each scoring model and scoring
    validation with it (every rank calls it: both builds are collective)."""
    peaks = {}
    for name, build in (
        ("rows", trainer.epoch_scoring_model),
        ("whole", trainer.scoring_model),
    ):
        before = reset_peak()
        model = build()
        evaluate_split(model, trainer.data.valid, collective=trainer.collective)
        peaks[f"{name}_scoring_peak_mb"] = resident_mb("VmHWM") - before
        del model
    return peaks


def rank_main(rank: int, mode: str, args: argparse.Namespace, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{out}/store_{mode}", rank=rank, world_size=WORLD
    )
    try:
        torch.set_num_threads(1)
        trainer = trained(args.items, args.dim, args.optimizer)
        folder = Path(out) / mode
        folder.mkdir(exist_ok=True)
        torch.distributed.barrier()
        scoring = scoring_peaks(trainer) if mode == "sharded" else {}
        write, read = (
            (write_sharded, read_sharded) if mode == "sharded" else (write_gathered, read_gathered)
        )
        before = reset_peak()
        write(trainer, folder, rank)
        write_peak = resident_mb("VmHWM") - before
        before_read = reset_peak()
        read(trainer, folder, rank)
        read_peak = resident_mb("VmHWM") - before_read
        written = sum(path.stat().st_size for path in folder.iterdir())
        stats: dict[str, Any] = {
            "resident_mb": before,
            "write_peak_mb": write_peak,
            "read_peak_mb": read_peak,
            "folder_mb": written / 2**20,
            "item_rows": len(trainer.tables.local["item_embedding"]),
            **scoring,
        }
        torch.save(stats, Path(out) / f"{mode}_rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=positive_int, default=2_000_000)
    parser.add_argument("--dim", type=positive_int, default=32)
    parser.add_argument("--optimizer", choices=("adam", "lazy_adam"), default="lazy_adam")
    args = parser.parse_args(argv)
    table_mb = args.items * args.dim * 4 / 2**20
    print(
        f"GMF IG, {args.items:,} items × {args.dim} ({table_mb:.0f} MB per item table), "
        f"{args.optimizer}, {WORLD} gloo processes",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as out:
        for mode in MODES:
            mp.spawn(rank_main, args=(mode, args, out), nprocs=WORLD)
            for rank in range(WORLD):
                stats = torch.load(Path(out) / f"{mode}_rank{rank}.pt")
                print(
                    f"{mode:>8} rank {rank}: {stats['item_rows']:,} item rows held, resident "
                    f"{stats['resident_mb']:.0f} MB before; peak above it writing "
                    f"{stats['write_peak_mb']:.0f} MB, restoring {stats['read_peak_mb']:.0f} MB; "
                    f"checkpoint folder {stats['folder_mb']:.0f} MB",
                    flush=True,
                )
                if "rows_scoring_peak_mb" in stats:
                    print(
                        f"{'':>8} rank {rank}: validation scoring, peak above resident: rows "
                        f"model {stats['rows_scoring_peak_mb']:.0f} MB, gathered model "
                        f"{stats['whole_scoring_peak_mb']:.0f} MB",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
