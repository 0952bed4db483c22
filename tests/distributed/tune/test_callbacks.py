"""MLflow from the Tune driver: what reaches a trial's run."""

from __future__ import annotations

from invlearn_ray.distributed.tune.callbacks import epoch_metrics


def test_only_reported_metrics_go_to_mlflow():
    result = {
        "epoch": 1,
        "valid/gauc": 0.6,
        "train_loss": 0.5,
        "ig/direct_steps": 3,
        "best_epoch": 1,
        "time_this_iter_s": 0.2,
        "training_iteration": 2,
        "checkpoint_path": "/x",
        "done": False,
    }
    assert epoch_metrics(result) == {
        "epoch": 1,
        "valid/gauc": 0.6,
        "train_loss": 0.5,
        "ig/direct_steps": 3,
        "best_epoch": 1,
    }
