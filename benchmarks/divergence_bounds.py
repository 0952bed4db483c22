"""How large training losses and weights get in healthy runs, and in diverging ones.

``TrainConfig.max_train_loss`` and ``max_weight`` stop a run whose epoch loss or largest
absolute parameter passes a bound (``TrainingDiverged``). This script measures what healthy runs
reach, so the bounds can sit far above them: it trains every method on each backbone at the
learning rates the tuning spaces span (and IG with the largest candidate steps they allow),
then a few runs at learning rates far beyond them, in this process (no Ray), with the
divergence check off, and prints per run the largest epoch loss and the largest |weight| over
its epochs, then the maximum over the healthy runs.

    python benchmarks/divergence_bounds.py --dataset datasets/ml100k      # ~25 min, 1 thread
    python benchmarks/divergence_bounds.py --dataset datasets/ml100k --epochs 30 \
        --backbones gmf,mf,lightgcn --methods none,ns,idl,ig,sl,bsl      # ~1 h (LightGCN)
    python benchmarks/divergence_bounds.py --dataset datasets/smoke --epochs 3   # seconds

"Healthy" means settings inside the tuning spaces, not a good model: BSL on raw scores drives
its loss towards minus infinity (the bound is one-sided) and its weights up, at any of them.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from invlearn_ray.data.loading import load_dataset
from invlearn_ray.methods.registry import METHODS
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import Trainer, TrainingDiverged, largest_weight

HEALTHY_LRS = (1e-3, 3e-2)
"""The ends of the tuning spaces' learning-rate ranges (``tune_spaces/*.yaml``)."""
IG_EXTREMES = tuple(
    {"lr": 1e-2, "dual_lr_ratio": 100.0, "step_rule": rule, "test_batch_size": 128}
    for rule in ("sign", "sgd", "adam")
)
"""IG's largest candidate steps in ``tune_spaces/ig.yaml``: lr 1e-2 x alpha/gamma 100, every
step rule, the small training-test batch (more meta steps per epoch)."""
UNHEALTHY_LRS = (10.0, 1e3, 1e6)


def measure(trainer: Trainer) -> tuple[float, float, float]:
    """Train to the end; return (largest epoch loss, largest |weight|, last valid AUC)."""
    loss, weight, auc = -math.inf, 0.0, math.nan
    while not trainer.should_stop:
        try:
            record = trainer.run_epoch(trainer.next_epoch)
        except TrainingDiverged:  # only non-finite values stop a run with unbounded checks
            return math.inf, largest_weight(trainer.model), math.nan
        loss = max(loss, record.train_loss)
        weight = max(weight, largest_weight(trainer.model))
        auc = record.valid["auc"]
    return loss, weight, auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="a built dataset folder")
    parser.add_argument("--backbones", default="gmf,neumf", help="comma-separated")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    unchecked = {"max_train_loss": math.inf, "max_weight": math.inf, "patience": args.epochs}

    runs: list[tuple[str, dict]] = []
    for backbone in args.backbones.split(","):
        for method in args.methods.split(","):
            for lr in HEALTHY_LRS:
                runs.append(("healthy", {"method": method, "backbone": backbone, "lr": lr}))
        for extreme in IG_EXTREMES if "ig" in args.methods.split(",") else ():
            for source in ("sampled", "both"):
                settings = {"method": "ig", "backbone": backbone, "unlabeled_source": source}
                runs.append(("healthy", {**settings, **extreme}))
        for lr in UNHEALTHY_LRS:
            runs.append(("too large", {"method": "none", "backbone": backbone, "lr": lr}))

    print(f"{'kind':<10} {'run':<58} {'max loss':>11} {'max |weight|':>13} {'AUC':>6} {'s':>5}")
    healthy_loss, healthy_weight = -math.inf, 0.0
    for kind, settings in runs:
        config = TrainConfig(epochs=args.epochs, **unchecked, **settings)
        started = time.perf_counter()
        try:
            loss, weight, auc = measure(Trainer(config, data))
        except ValueError as error:  # a method the dataset cannot train (e.g. no unlabeled)
            print(f"{kind:<10} {settings} skipped: {error}")
            continue
        name = " ".join(f"{key}={value}" for key, value in settings.items())
        print(
            f"{kind:<10} {name:<58} {loss:>11.3g} {weight:>13.3g} {auc:>6.3f} "
            f"{time.perf_counter() - started:>5.1f}",
            flush=True,
        )
        if kind == "healthy":
            healthy_loss, healthy_weight = max(healthy_loss, loss), max(healthy_weight, weight)
    print(
        f"healthy runs: largest epoch loss {healthy_loss:.3g}, largest |weight| "
        f"{healthy_weight:.3g}"
    )
    print(
        f"bounds: max_train_loss {TrainConfig.max_train_loss:g}, max_weight "
        f"{TrainConfig.max_weight:g}"
    )


if __name__ == "__main__":
    main()
