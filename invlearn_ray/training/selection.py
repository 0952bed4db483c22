"""Model selection and early stopping: which epoch's model a run keeps, and when it stops.

A run keeps the weights of its best validation epoch by a *ranking* metric (method.md §5) and
stops after ``patience`` epochs without a gain, or at ``max_epochs``. Test data is never seen
here: the selected model is scored on test once, after training.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from torch import Tensor

from invlearn_ray.models.backbones import Backbone


class ModelSelection:
    """The best validation epoch so far, its weights, and the early-stopping count.

    Memory: one copy of the model's parameters (the best epoch's).

    Args:
        metric: the validation metric to maximize (``TrainConfig.select_metric``).
        patience: epochs without a gain allowed before stopping.
        max_epochs: stop after this many epochs in any case.
    """

    def __init__(self, metric: str, patience: int, max_epochs: int) -> None:
        self.metric = metric
        self.patience = patience
        self.max_epochs = max_epochs
        self.best_score = -math.inf
        self.best_epoch = -1
        self.best_state: dict[str, Tensor] | None = None
        self.epochs_without_gain = 0

    def update(self, epoch: int, valid: dict[str, float], model: Backbone) -> None:
        """After an epoch: keep ``model``'s weights if its validation score is the best yet."""
        score = valid[self.metric]
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.epochs_without_gain = 0
        else:
            self.epochs_without_gain += 1

    def should_stop(self, next_epoch: int) -> bool:
        return next_epoch >= self.max_epochs or self.epochs_without_gain > self.patience

    def selected(self, model: Backbone) -> Backbone:
        """A copy of ``model`` with the best epoch's weights, in eval mode."""
        selected = copy.deepcopy(model)
        if self.best_state is not None:
            selected.load_state_dict(self.best_state)
        selected.eval()
        return selected

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "epochs_without_gain": self.epochs_without_gain,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = state["best_score"]
        self.best_epoch = state["best_epoch"]
        self.best_state = state["best_state"]
        self.epochs_without_gain = state["epochs_without_gain"]
