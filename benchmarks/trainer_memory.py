"""Does a training process's resident memory stay flat across epochs?

Trains one IG configuration on a built dataset and prints the process's resident memory after
every epoch and its peak. Written for the heap growth issue 13's 3 M-row micro_video study ran
into: IG with per-row directions allocates dense table gradients every meta step, and without
``core.heap.release_freed_heap`` glibc's heap grew ~1.3 GB an epoch (6.6 GB after 4 epochs at
3 M rows; 19 GB in a Tune trial, which Ray then killed). ``--no-trim`` turns the per-epoch trim
off, to measure both sides in one session. Ray-free.

    python pipelines/build_data.py --preset micro_video --rows 3000000 --label-fraction 0.1 \\
        --engine memory --out datasets/mv3m-10pct
    python benchmarks/trainer_memory.py datasets/mv3m-10pct --epochs 4
    python benchmarks/trainer_memory.py datasets/mv3m-10pct --epochs 4 --no-trim
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time
from pathlib import Path
from unittest import mock

import torch

from invlearn_ray.data.loading import load_dataset
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import EpochRecord, Trainer


def resident_gb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, help="a built dataset folder")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--direction", default="per_row", choices=["batch", "per_row"])
    parser.add_argument("--test-batch-size", type=int, default=64)
    parser.add_argument("--no-trim", action="store_true", help="skip the per-epoch heap trim")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.dataset)
    config = TrainConfig(
        method="ig",
        backbone="biased_mf",
        bias_init="popularity",
        dual_lr_ratio=10.0,
        ig_direction=args.direction,
        lr=1.3e-5,
        test_batch_size=args.test_batch_size,
        epochs=args.epochs,
        patience=args.epochs,
    )
    print(f"loaded {args.dataset}: resident {resident_gb():.2f} GB", flush=True)
    started = time.perf_counter()

    def report(record: EpochRecord) -> None:
        print(f"epoch {record.epoch}: resident {resident_gb():.2f} GB", flush=True)

    trim = "invlearn_ray.training.trainer.release_freed_heap"
    with mock.patch(trim, lambda: False) if args.no_trim else contextlib.nullcontext():
        Trainer(config, data).fit(on_epoch_end=report)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    trimmed = "off" if args.no_trim else "on"
    print(f"trim {trimmed}: {time.perf_counter() - started:.1f} s, peak resident {peak:.2f} GB")


if __name__ == "__main__":
    main()
