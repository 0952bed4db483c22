"""Does lazy Adam cost accuracy? Dense vs lazy Adam on the ML-100K split, validation metrics.

``TrainConfig.embedding_optimizer='lazy_adam'`` updates only the table rows a step touched
(``optim/optimizers.py``); it is what makes data parallelism pay on large tables, but it is not
the paper's optimizer. This trains each ``--methods`` on GMF with both optimizers over
``--seeds`` (the given ML-100K configuration: lr 1e-2, 30 epochs, patience 5, selected on
validation GAUC) and prints the selected epoch's validation metrics, mean ± sd over seeds, and
the paired difference lazy − dense. Test metrics are not looked at.

    python benchmarks/embedding_optimizer_accuracy.py --split-dir ../shared/data/ml-100k/split
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invlearn_ray.cli import comma_names, positive_int  # noqa: E402
from invlearn_ray.data.build import BuildConfig, build_dataset_in_memory  # noqa: E402
from invlearn_ray.data.loading import load_dataset  # noqa: E402
from invlearn_ray.data.sources import SourceSpec  # noqa: E402
from invlearn_ray.training.config import EMBEDDING_OPTIMIZERS, TrainConfig  # noqa: E402
from invlearn_ray.training.trainer import Trainer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
METRICS = ("auc", "gauc", "ndcg_at_10", "mrr")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--split-dir", type=Path, default=REPO_ROOT.parent / "shared/data/ml-100k/split"
    )
    parser.add_argument("--methods", type=comma_names, default=("none", "ns", "ig"))
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds 0..n-1")
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        dataset = Path(folder) / "ml100k"
        build_dataset_in_memory(BuildConfig(SourceSpec.presplit(args.split_dir, "ml100k")), dataset)
        data = load_dataset(dataset)

    print(f"GMF on {args.split_dir}, lr {args.lr}, validation metrics of the selected epoch")
    print(f"{'method':<7} {'optimizer':<10} {'epoch':>6} " + " ".join(f"{m:>15}" for m in METRICS))
    for method in args.methods:
        results: dict[str, list[dict[str, float]]] = {}
        for optimizer in EMBEDDING_OPTIMIZERS:
            results[optimizer] = []
            for seed in range(args.seeds):
                config = TrainConfig(
                    method=method,
                    backbone="gmf",
                    lr=args.lr,
                    epochs=30,
                    patience=5,
                    seed=seed,
                    embedding_optimizer=optimizer,
                )
                result = Trainer(config, data).fit()
                results[optimizer].append({**result.valid, "epoch": result.best_epoch})
            runs = results[optimizer]
            epochs = statistics.mean(run["epoch"] for run in runs)
            cells = [_mean_sd([run[m] for run in runs]) for m in METRICS]
            print(f"{method:<7} {optimizer:<10} {epochs:6.1f} " + " ".join(cells), flush=True)
        paired = [
            _mean_sd(
                [
                    lazy[m] - dense[m]
                    for lazy, dense in zip(results["lazy_adam"], results["adam"], strict=True)
                ]
            )
            for m in METRICS
        ]
        print(f"{method:<7} {'lazy-dense':<10} {'':>6} " + " ".join(paired), flush=True)


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.4f}±{sd:.4f}".rjust(15)


if __name__ == "__main__":
    main()
