"""Scoring a model on a dataset's splits: the reports the trainer selects on and publishes.

* :func:`evaluate_split` — AUC, GAUC, NDCG@K, MRR (and random floors) over a split's own
  labeled rows, the paper's protocol;
* :func:`evaluate_full_ranking` — Recall@K / NDCG@K over every item a user has not trained on
  (the BSL protocol, the one to use for ranking claims — method.md §6);
* :func:`annotation_quality` — how well the model's implied labels of *unlabeled* rows match
  their hidden truth. IDL's weights favour label 1 exactly when ``ℓ(z, 0) > ℓ(z, 1)``, i.e. when
  the logit ``z > 0``, so the annotation of a row is ``1[z > 0]`` for every method.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from invlearn_ray.core.backbones import Backbone
from invlearn_ray.core.metrics import evaluate_rows, full_ranking_metrics
from invlearn_ray.data.recdata import UNKNOWN_LABEL, Interactions, UserItemIndex


@torch.no_grad()
def score_pairs(model: Backbone, users: Tensor, items: Tensor, batch_size: int = 1 << 16) -> Tensor:
    """Logits of ``(users[k], items[k])`` pairs, in batches (results do not depend on the size)."""
    if len(users) <= batch_size:
        return model(users, items)
    return torch.cat(
        [
            model(users[start : start + batch_size], items[start : start + batch_size])
            for start in range(0, len(users), batch_size)
        ]
    )


def evaluate_split(model: Backbone, split: Interactions, ks: Sequence[int] = (10, 20)) -> dict:
    """The paper's row metrics on one labeled split."""
    was_training = model.training
    model.eval()
    scores = score_pairs(model, split.users, split.items)
    model.train(was_training)
    return evaluate_rows(scores, split.labels, split.users, ks=ks)


def evaluate_full_ranking(
    model: Backbone,
    split: Interactions,
    seen: UserItemIndex,
    ks: Sequence[int] = (20,),
    user_batch_size: int = 1024,
) -> dict:
    """Full-catalogue Recall@K / NDCG@K for the split's positive items, training items excluded."""
    positives = split.take(split.labels > 0.5)
    relevant = UserItemIndex.from_pairs(
        positives.users.cpu(), positives.items.cpu(), seen.n_users, seen.n_items
    ).to(split.users.device)
    users = torch.unique(positives.users)
    was_training = model.training
    model.eval()
    report = full_ranking_metrics(
        model.score_all, users, relevant, seen, ks=ks, user_batch_size=user_batch_size
    )
    model.train(was_training)
    return report


@torch.no_grad()
def annotation_quality(
    model: Backbone, users: Tensor, items: Tensor, hidden_labels: Tensor, prefix: str
) -> dict[str, float]:
    """Precision / recall / accuracy of the annotation ``1[z > 0]`` against hidden labels.

    Rows whose hidden label is unknown are ignored. Keys are ``{prefix}_precision`` etc.;
    ``{prefix}_rows`` says how many rows were judged, ``{prefix}_true_positive_rate`` how many of
    them are truly positive (the base rate, to read the others against).
    """
    known = hidden_labels != UNKNOWN_LABEL
    if not bool(known.any()):
        return {}
    logits = score_pairs(model, users[known], items[known])
    predicted = logits > 0
    truth = hidden_labels[known] == 1
    true_positive = (predicted & truth).sum().item()
    n_predicted, n_true, n_rows = predicted.sum().item(), truth.sum().item(), int(known.sum())
    return {
        f"{prefix}_rows": n_rows,
        f"{prefix}_true_positive_rate": n_true / n_rows,
        f"{prefix}_accuracy": (predicted == truth).float().mean().item(),
        f"{prefix}_precision": true_positive / n_predicted if n_predicted else float("nan"),
        f"{prefix}_recall": true_positive / n_true if n_true else float("nan"),
    }
