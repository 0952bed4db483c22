"""The fused IG step equals a naive, copy-based implementation of Algorithm 1."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from invlearn_ray.core.backbones import BACKBONES, build_backbone
from invlearn_ray.core.inverse_gradient import (
    CANDIDATES,
    DualDirection,
    dual_loss_sum,
    inverse_gradient_step,
)

N_USERS, N_ITEMS = 20, 30


def eq4_weights(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper eq. 4 written literally (fine for the moderate logits of these tests)."""
    loss_pos = F.softplus(-logits).detach()
    loss_neg = F.softplus(logits).detach()
    normalizer = loss_neg / loss_pos + loss_pos / loss_neg
    return (loss_neg / loss_pos) / normalizer, (loss_pos / loss_neg) / normalizer


def make_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    extra = {}
    if name == "lightgcn":
        generator = torch.Generator().manual_seed(seed)
        extra = {
            "graph_users": torch.randint(0, N_USERS, (80,), generator=generator),
            "graph_items": torch.randint(0, N_ITEMS, (80,), generator=generator),
        }
    return build_backbone(name, N_USERS, N_ITEMS, embedding_dim=8, **extra)


def make_batches(seed: int):
    generator = torch.Generator().manual_seed(seed)
    unlabeled = (
        torch.randint(0, N_USERS, (64,), generator=generator),
        torch.randint(0, N_ITEMS, (64,), generator=generator),
    )
    test = (
        torch.randint(0, N_USERS, (48,), generator=generator),
        torch.randint(0, N_ITEMS, (48,), generator=generator),
        torch.randint(0, 2, (48,), generator=generator).float(),
    )
    return unlabeled, test


def naive_step(model, optimizer, direction, unlabeled, test, dual_lr):
    """Algorithm 1 lines 9–18 with model copies and three separate forwards."""
    logits = model(*unlabeled)
    pos, neg = eq4_weights(logits)
    dual = dual_loss_sum(logits, pos, neg) / len(logits)
    grads = torch.autograd.grad(dual, list(model.parameters()))
    steps = direction(list(grads))
    candidates = {"none": copy.deepcopy(model)}
    for name, sign in (("direct", -1.0), ("inverse", 1.0)):
        candidate = copy.deepcopy(model)
        with torch.no_grad():
            for param, step in zip(candidate.parameters(), steps, strict=True):
                param.add_(sign * dual_lr * step)
        candidates[name] = candidate
    users, items, labels = test
    losses = {
        name: F.binary_cross_entropy_with_logits(candidate(users, items), labels).item()
        for name, candidate in candidates.items()
    }
    best = min(CANDIDATES, key=lambda name: losses[name])
    model.load_state_dict(candidates[best].state_dict())
    optimizer.zero_grad()
    F.binary_cross_entropy_with_logits(model(users, items), labels).backward()
    optimizer.step()
    return best, [losses[name] for name in CANDIDATES]


@pytest.mark.parametrize("rule", ["sgd", "sign", "adam"])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_fused_step_matches_naive_copies_over_several_steps(backbone, rule):
    fused, naive = make_model(backbone), make_model(backbone)
    fused_opt = torch.optim.Adam(fused.parameters(), lr=1e-2)
    naive_opt = torch.optim.Adam(naive.parameters(), lr=1e-2)
    fused_dir, naive_dir = DualDirection(rule), DualDirection(rule)
    # A large α makes the three candidates clearly different, so choices vary between steps.
    dual_lr = 0.05 if rule != "sgd" else 5.0
    for step in range(4):
        unlabeled, test = make_batches(step)
        result = inverse_gradient_step(
            fused,
            fused_opt,
            fused_dir,
            *unlabeled,
            *test,
            dual_lr=dual_lr,
            dual_weights=eq4_weights,
        )
        best, losses = naive_step(naive, naive_opt, naive_dir, unlabeled, test, dual_lr)
        assert CANDIDATES[int(result.choice)] == best
        torch.testing.assert_close(result.test_losses, torch.tensor(losses), rtol=1e-5, atol=1e-6)
        for (name, got), want in zip(fused.named_parameters(), naive.parameters(), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


def test_a_zero_direction_keeps_the_parameters_before_the_test_step():
    # With α = 0 all candidates tie; the tie must resolve to "none".
    model = make_model("gmf")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    unlabeled, test = make_batches(0)
    result = inverse_gradient_step(
        model,
        optimizer,
        DualDirection("sign"),
        *unlabeled,
        *test,
        dual_lr=0.0,
        dual_weights=eq4_weights,
    )
    assert CANDIDATES[int(result.choice)] == "none"
    for got, want in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(got, want)


def test_step_leaves_no_gradient_to_accumulate_into_the_next_step():
    model = make_model("neumf")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    unlabeled, test = make_batches(1)
    inverse_gradient_step(
        model,
        optimizer,
        DualDirection("adam"),
        *unlabeled,
        *test,
        dual_lr=1e-4,
        dual_weights=eq4_weights,
    )
    first = [p.grad.clone() for p in model.parameters()]
    inverse_gradient_step(
        model,
        optimizer,
        DualDirection("adam"),
        *unlabeled,
        *test,
        dual_lr=1e-4,
        dual_weights=eq4_weights,
    )
    # Each step's gradient is assigned, not added: the second differs from twice the first.
    for grad, old in zip((p.grad for p in model.parameters()), first, strict=True):
        assert not torch.allclose(grad, 2 * old)


def test_unknown_step_rule_is_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match="valid rules"):
        DualDirection("momentum")
