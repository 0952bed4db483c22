"""Steps on the touched rows of the tables take exactly the gradients of steps on whole tables."""

from __future__ import annotations

import pytest
import torch

from invlearn_ray.methods.objectives import TrainBatch
from invlearn_ray.methods.registry import build_objective
from invlearn_ray.models.backbones import BACKBONES, build_backbone
from invlearn_ray.optim.gradients import RowGradient, grad_and_value
from invlearn_ray.optim.touched_rows import AllRows, TouchedRows, batch_ids, rows_of
from invlearn_ray.training.config import TrainConfig

N_USERS, N_ITEMS = 40, 70
GATHER_BACKBONES = sorted(name for name, cls in BACKBONES.items() if cls.table_index)


def batch(seed: int, rows: int = 24) -> TrainBatch:
    """Every id field filled, with repeated ids (so compact rows accumulate several terms)."""
    generator = torch.Generator().manual_seed(seed)

    def ids(high: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=generator)

    return TrainBatch(
        rows=torch.arange(rows),
        users=ids(N_USERS // 4, rows),
        items=ids(N_ITEMS, rows),
        labels=(torch.rand(rows, generator=generator) < 0.5).float(),
        unlabeled_users=ids(N_USERS, rows),
        unlabeled_items=ids(N_ITEMS // 3, rows),
        candidates=ids(N_ITEMS, rows, 3),
        negatives=ids(N_ITEMS, rows, 4),
    )


@pytest.mark.parametrize("method", ["ns", "idl", "dns", "bsl", "sl_epsce"])
@pytest.mark.parametrize("backbone", GATHER_BACKBONES)
def test_loss_and_gradient_on_touched_rows_equal_those_on_whole_tables(backbone, method):
    torch.manual_seed(0)
    model = build_backbone(backbone, N_USERS, N_ITEMS, embedding_dim=8)
    objective = build_objective(TrainConfig(method=method, n_candidates=3), 24, torch.device("cpu"))
    params = {name: param.detach() for name, param in model.named_parameters()}
    whole = batch(1)

    def loss_of(batch_: TrainBatch):
        def loss(theta):
            result = objective(lambda u, i: model(u, i, theta), batch_, 0, 0)
            return result.total, result.count

        return loss

    dense, (dense_loss, _) = grad_and_value(loss_of(whole), params, functional=False)
    read = TouchedRows(model.table_index, batch_ids(whole))
    compact, (compact_loss, _) = grad_and_value(
        loss_of(read.renumber_batch(whole)), read.gather(params), functional=False
    )
    torch.testing.assert_close(compact_loss, dense_loss)
    rows = read.row_gradients(compact, params)
    for name, grad in dense.items():
        got = rows[name]
        if name in model.table_names:
            assert isinstance(got, RowGradient)
            # The gradient is zero off the touched rows: the compact form loses nothing.
            torch.testing.assert_close(got.dense(), grad, rtol=1e-5, atol=1e-7)
        else:
            torch.testing.assert_close(got, grad, rtol=1e-5, atol=1e-7)


def test_renumbered_ids_index_the_unique_ids():
    whole = batch(2)
    read = TouchedRows({"user_embedding": "user", "item_embedding": "item"}, batch_ids(whole))
    renumbered = read.renumber_batch(whole)
    for name in ("users", "unlabeled_users"):
        assert torch.equal(read.unique["user"][getattr(renumbered, name)], getattr(whole, name))
    for name in ("items", "unlabeled_items", "candidates", "negatives"):
        assert torch.equal(read.unique["item"][getattr(renumbered, name)], getattr(whole, name))
    assert torch.equal(renumbered.labels, whole.labels)
    assert torch.equal(read.unique["user"], torch.unique(read.unique["user"]))


def test_a_row_gradient_is_gathered_with_zeros_where_it_holds_no_row():
    grad = RowGradient(torch.tensor([2, 5, 9]), torch.arange(6.0).view(3, 2), n_rows=12)
    read = TouchedRows({"table": "user"}, {"user": [torch.tensor([9, 0, 5, 11])]})
    compact = read.gather({"table": grad})["table"]
    torch.testing.assert_close(compact, grad.dense()[read.unique["user"]])
    assert read.unique["user"].tolist() == [0, 5, 9, 11]


def test_backbones_without_a_gather_and_disabled_steps_keep_whole_tables():
    graph = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    lightgcn = build_backbone(
        "lightgcn", N_USERS, N_ITEMS, graph_users=graph[0], graph_items=graph[1]
    )
    gmf = build_backbone("gmf", N_USERS, N_ITEMS)
    ids = batch_ids(batch(3))
    assert isinstance(rows_of(lightgcn, ids, sparse=True), AllRows)
    assert isinstance(rows_of(gmf, ids, sparse=False), AllRows)
    assert isinstance(rows_of(gmf, ids, sparse=True), TouchedRows)
