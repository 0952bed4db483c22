"""On a GPU, CUDA-graph replay and compiled steps must take exactly the eager steps.

Skipped without CUDA (this project's CI has none); run on the GPU machine with
``pytest tests/training/test_cuda_steps.py``.
"""

from __future__ import annotations

import pytest
import torch

from invlearn_ray.data.recdata import Interactions, ObservedUnlabeled, RecData, UserItemIndex
from invlearn_ray.training.config import TrainConfig
from invlearn_ray.training.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def small_dataset(device: str) -> RecData:
    generator = torch.Generator().manual_seed(0)
    n_users, n_items = 50, 80

    def rows(n: int) -> Interactions:
        return Interactions(
            torch.randint(0, n_users, (n,), generator=generator),
            torch.randint(0, n_items, (n,), generator=generator),
            (torch.rand(n, generator=generator) < 0.7).float(),
        )

    train = rows(900)
    return RecData(
        n_users=n_users,
        n_items=n_items,
        train_train=train.take(torch.arange(800)),
        train_test=train.take(torch.arange(800, 900)),
        valid=rows(300),
        test=rows(300),
        observed_unlabeled=ObservedUnlabeled.empty(),
        seen_in_training=UserItemIndex.from_pairs(train.users, train.items, n_users, n_items),
    ).to(device)


def train_two_epochs(method: str, backbone: str, **options) -> Trainer:
    # batch 96 leaves a short last batch, so both the captured and the eager path run.
    config = TrainConfig(
        method=method,
        backbone=backbone,
        batch_size=96,
        test_batch_size=64,
        epochs=2,
        dual_lr_ratio=5.0,
        **options,
    )
    trainer = Trainer(config, small_dataset("cuda"))
    for epoch in range(2):
        trainer.run_epoch(epoch)
    return trainer


GRAPHS = {"cuda_graphs": True}
COMPILED_GRAPHS = {"compile": True, "cuda_graphs": True}


@pytest.mark.parametrize(
    ("method", "backbone", "options"),
    [
        ("ns", "gmf", GRAPHS),
        ("ig", "gmf", GRAPHS),
        ("ig", "neumf", GRAPHS),
        ("ig", "lightgcn", GRAPHS),
        ("ns", "neumf", COMPILED_GRAPHS),
        ("ig", "gmf", COMPILED_GRAPHS),
    ],
)
def test_graphed_and_compiled_steps_equal_eager_steps(method, backbone, options):
    eager = train_two_epochs(method, backbone)
    fast = train_two_epochs(method, backbone, **options)
    for (name, got), want in zip(
        fast.model.named_parameters(), eager.model.parameters(), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)
    if method == "ig":
        assert torch.equal(
            torch.cat(fast.directions.log["choice"]), torch.cat(eager.directions.log["choice"])
        )
