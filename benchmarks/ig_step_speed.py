"""How much does an Inverse Gradient meta step cost next to an ordinary NS step?

Times the product's own step code side by side, in one run, on one device:

* ``NS``  — ``Trainer.supervised_step`` of method ``ns``: a batch of labeled rows plus as many
  sampled unlabeled rows, BCE, backward, fused Adam;
* ``IG``  — ``Trainer.meta_step`` of method ``ig``: dual-loss gradient on ``batch`` unlabeled
  rows, three candidates judged on ``batch`` training-test rows, the test-loss step;
* ``reference`` — a meta step written the way the paper's released code does it: deep copies
  of the model, two separate dual-loss gradients, three separate forwards, a host-side argmin,
  and Adam optimizers re-created at every step.

Modes: ``eager``; ``compiled`` (``TrainConfig.compile``: the loss functions through
``torch.compile``); on CUDA also ``graphs`` (``cuda_graphs``: each step replayed as a CUDA
graph) and ``compiled+graphs``. Ratios are computed within one mode, so both sides get the same
treatment. Ray-free: runs on the GPU machine, which has no Ray.

    python benchmarks/ig_step_speed.py                       # CPU, ML-1M-sized tables
    python benchmarks/ig_step_speed.py --device cuda --modes eager,graphs,compiled+graphs
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invlearn_ray.data.recdata import (  # noqa: E402
    Interactions,
    ObservedUnlabeled,
    RecData,
    UserItemIndex,
)
from invlearn_ray.methods.losses import inverse_dual_loss  # noqa: E402
from invlearn_ray.training.config import TrainConfig  # noqa: E402
from invlearn_ray.training.trainer import Trainer  # noqa: E402


def random_dataset(n_users: int, n_items: int, n_rows: int, seed: int, device: str) -> RecData:
    """Uniformly random interactions of a given size: step cost depends on shapes, not on data."""
    generator = torch.Generator().manual_seed(seed)

    def rows(n: int) -> Interactions:
        return Interactions(
            torch.randint(0, n_users, (n,), generator=generator),
            torch.randint(0, n_items, (n,), generator=generator),
            (torch.rand(n, generator=generator) < 0.8).float(),
        )

    train = rows(n_rows)
    cut = int(0.9 * n_rows)
    data = RecData(
        n_users=n_users,
        n_items=n_items,
        train_train=train.take(torch.arange(cut)),
        train_test=train.take(torch.arange(cut, n_rows)),
        valid=rows(n_rows // 3),
        test=rows(n_rows // 3),
        observed_unlabeled=ObservedUnlabeled.empty(),
        seen_in_training=UserItemIndex.from_pairs(train.users, train.items, n_users, n_items),
    )
    return data.to(device)


def reference_meta_step(model, batch, lr: float, dual_lr: float) -> int:
    """The released code's meta step: copies, two gradients, three forwards, fresh optimizers."""
    direct, inverse = copy.deepcopy(model), copy.deepcopy(model)
    for candidate, sign in ((direct, 1.0), (inverse, -1.0)):
        optimizer = torch.optim.Adam(candidate.parameters(), lr=dual_lr)
        loss = inverse_dual_loss(candidate(batch.unlabeled_users, batch.unlabeled_items)).loss
        optimizer.zero_grad()
        (sign * loss).backward()
        optimizer.step()
    losses = []
    with torch.no_grad():
        for candidate in (direct, model, inverse):
            logits = candidate(batch.test_users, batch.test_items)
            losses.append(F.binary_cross_entropy_with_logits(logits, batch.test_labels).item())
    best = min(range(3), key=losses.__getitem__)
    model.load_state_dict((direct, model, inverse)[best].state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    optimizer.zero_grad()
    F.binary_cross_entropy_with_logits(
        model(batch.test_users, batch.test_items), batch.test_labels
    ).backward()
    optimizer.step()
    return best


def _timer(device: str):
    def measure(fn, steps: int) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps

    return measure


def run(args: argparse.Namespace) -> list[dict]:
    data = random_dataset(args.users, args.items, args.rows, seed=0, device=args.device)
    measure = _timer(args.device)
    rows = []
    reference_seconds: dict[str, float] = {}
    for backbone in args.backbones.split(","):
        for mode in args.modes.split(","):
            options = {
                "compile": "compiled" in mode,
                "cuda_graphs": "graphs" in mode,
            }
            base = {"backbone": backbone, "batch_size": args.batch, "test_batch_size": args.batch}
            ns = Trainer(TrainConfig(method="ns", **base, **options), data)
            # One meta step per training-train batch, so a meta step's unlabeled rows number
            # `batch`, as the NS step's do (with the default `train_test`, an epoch's unlabeled
            # rows are spread over ~9x fewer, ~9x larger meta steps).
            ig_config = TrainConfig(method="ig", meta_steps="train_train", **base, **options)
            ig = Trainer(ig_config, data)
            ns_batch = ns.batches.plan(0).supervised[0]
            meta_batch = ig.batches.plan(0).meta[0]

            def ns_step(trainer=ns, batch=ns_batch):
                trainer.supervised_step(batch, 0)

            def ig_step(trainer=ig, batch=meta_batch):
                trainer.meta_step(batch, 0)

            for step in (ns_step, ig_step):  # warm-up: compilation, graph capture, caches
                measure(step, args.warmup)
            rounds = {"ns": [], "ig": []}
            for _ in range(args.rounds):  # interleaved, so drifts in machine load hit both
                rounds["ns"].append(measure(ns_step, args.steps))
                rounds["ig"].append(measure(ig_step, args.steps))
            ns_time = statistics.median(rounds["ns"])
            ig_time = statistics.median(rounds["ig"])
            row = {
                "backbone": backbone,
                "mode": mode,
                "ns_ms": 1e3 * ns_time,
                "ig_ms": 1e3 * ig_time,
                "ig_over_ns": ig_time / ns_time,
            }
            if backbone not in reference_seconds:
                # The released code's style has no compiled or graphed form: it is timed once
                # per backbone, eagerly, and every mode's IG step is compared with it.
                reference_model = copy.deepcopy(ig.model)

                def reference_step(model=reference_model, batch=meta_batch, cfg=ig.config):
                    reference_meta_step(model, batch, cfg.lr, cfg.dual_lr)

                reference_seconds[backbone] = measure(reference_step, args.steps)
            row["reference_ms"] = 1e3 * reference_seconds[backbone]
            row["reference_over_ig"] = reference_seconds[backbone] / ig_time
            rows.append(row)
            print(_format(row), flush=True)
    return rows


def _format(row: dict) -> str:
    text = (
        f"{row['backbone']:>6} {row['mode']:>16}: NS {row['ns_ms']:7.3f} ms  "
        f"IG {row['ig_ms']:7.3f} ms  IG/NS {row['ig_over_ns']:5.2f}"
    )
    return text + (
        f"  reference (eager) {row['reference_ms']:7.3f} ms"
        f"  reference/IG {row['reference_over_ig']:5.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backbones", default="gmf,neumf")
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--users", type=int, default=6040, help="ML-1M: 6,040 users")
    parser.add_argument("--items", type=int, default=3706, help="ML-1M: 3,706 items")
    parser.add_argument("--rows", type=int, default=200_000, help="training rows")
    parser.add_argument("--batch", type=int, default=1024, help="the paper's batch size")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"users={args.users} items={args.items} batch={args.batch} "
        f"(median of {args.rounds} interleaved rounds of {args.steps} steps)",
        flush=True,
    )
    run(args)


if __name__ == "__main__":
    main()
