"""Parameter updates: dense Adam fed row gradients is Adam; lazy Adam moves touched rows only."""

from __future__ import annotations

import copy

import pytest
import torch

from invlearn_ray.models.backbones import build_backbone
from invlearn_ray.optim.gradients import RowGradient
from invlearn_ray.optim.optimizers import DenseUpdate, LazyAdam

N_USERS, N_ITEMS = 30, 50


def model(seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone("neumf", N_USERS, N_ITEMS, embedding_dim=4, mlp_layers=2)


def random_grads(net, step: int, rows: dict[str, torch.Tensor] | None = None):
    """Per parameter: a row gradient on ``rows[name]`` (tables) or a dense gradient (heads)."""
    generator = torch.Generator().manual_seed(100 + step)
    grads = {}
    for name, param in net.named_parameters():
        if rows is not None and name in net.table_names:
            indices = rows[name]
            values = torch.randn(len(indices), *param.shape[1:], generator=generator)
            grads[name] = RowGradient(indices, values, len(param))
        else:
            grads[name] = torch.randn(param.shape, generator=generator)
    return grads


def touched(net, step: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    return {
        name: torch.unique(torch.randint(0, len(param), (7,), generator=generator))
        for name, param in net.named_parameters()
        if name in net.table_names
    }


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_dense_update_of_row_gradients_is_adam_on_their_dense_form(weight_decay):
    rows_net, dense_net = model(), model()
    update = DenseUpdate(
        rows_net, torch.optim.Adam(rows_net.parameters(), lr=0.01, weight_decay=weight_decay)
    )
    reference = torch.optim.Adam(dense_net.parameters(), lr=0.01, weight_decay=weight_decay)
    for step in range(4):
        grads = random_grads(rows_net, step, touched(rows_net, step))
        update.step(grads)
        for name, param in dense_net.named_parameters():
            grad = grads[name]
            param.grad = grad.dense() if isinstance(grad, RowGradient) else grad.clone()
        reference.step()
        for (name, got), want in zip(
            rows_net.named_parameters(), dense_net.parameters(), strict=True
        ):
            # The same dense gradient reaches the same torch optimizer: bit for bit.
            assert torch.equal(got, want), name
            assert torch.equal(got.grad, want.grad), name


def test_lazy_adam_touching_every_row_is_adam():
    lazy_net, dense_net = model(), model()
    lazy = LazyAdam(lazy_net, lr=0.01, weight_decay=0.01)
    reference = torch.optim.Adam(dense_net.parameters(), lr=0.01, weight_decay=0.01)
    every_row = {
        name: torch.arange(len(param))
        for name, param in lazy_net.named_parameters()
        if name in lazy_net.table_names
    }
    for step in range(5):
        grads = random_grads(lazy_net, step, every_row)
        lazy.step(grads)
        for name, param in dense_net.named_parameters():
            grad = grads[name]
            param.grad = grad.dense() if isinstance(grad, RowGradient) else grad.clone()
        reference.step()
    for (name, got), want in zip(lazy_net.named_parameters(), dense_net.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=name)


def test_lazy_adam_leaves_untouched_rows_and_their_moments_alone():
    net = model()
    lazy = LazyAdam(net, lr=0.01)
    lazy.step(random_grads(net, 0, touched(net, 0)))
    before = {name: param.detach().clone() for name, param in net.named_parameters()}
    moments = copy.deepcopy(lazy.state_dict())
    rows = touched(net, 1)
    lazy.step(random_grads(net, 1, rows))
    for name in net.table_names:
        untouched = torch.ones(len(before[name]), dtype=torch.bool)
        untouched[rows[name]] = False
        param = dict(net.named_parameters())[name]
        assert torch.equal(param[untouched], before[name][untouched])
        assert not torch.equal(param[rows[name]], before[name][rows[name]])
        for kind in ("first", "second"):
            state = lazy.state_dict()[kind][name]
            assert torch.equal(state[untouched], moments[kind][name][untouched])


def test_lazy_adam_resumes_from_its_state_dict():
    net, resumed_net = model(), model()
    lazy, resumed = LazyAdam(net, lr=0.01), LazyAdam(resumed_net, lr=0.01)
    for step in range(2):
        lazy.step(random_grads(net, step, touched(net, step)))
    resumed_net.load_state_dict(copy.deepcopy(net.state_dict()))
    resumed.load_state_dict(copy.deepcopy(lazy.state_dict()))
    grads = random_grads(net, 2, touched(net, 2))
    lazy.step(grads)
    resumed.step(grads)
    for got, want in zip(resumed_net.parameters(), net.parameters(), strict=True):
        assert torch.equal(got, want)
