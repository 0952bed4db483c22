"""The IG step equals a naive, copy-based implementation of Algorithm 1."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from invlearn_ray.methods.inverse_gradient import (
    CANDIDATES,
    DualDirection,
    InverseGradient,
    aligned_dual_gradient,
)
from invlearn_ray.methods.losses import idl_weights
from invlearn_ray.models.backbones import BACKBONES, build_backbone

N_USERS, N_ITEMS = 20, 30


# The IDL weights themselves are checked against eq. 4 in test_losses. The oracle shares them:
# near initialisation the dual gradient is a near-cancellation (~1e-8), and Adam directions
# g / (|g| + ε) would amplify a 1e-7 difference between two weight formulas into a failure that
# says nothing about the step.


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
    pos, neg = idl_weights(logits)
    dual = (pos * F.softplus(-logits) + neg * F.softplus(logits)).mean()
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


def stepper_for(model, rule: str, dual_lr: float, **kwargs) -> InverseGradient:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return InverseGradient(model, optimizer, dual_lr=dual_lr, step_rule=rule, **kwargs)


@pytest.mark.parametrize("rule", ["sgd", "sign", "adam"])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_step_matches_naive_copies_over_several_steps(backbone, rule):
    fused, naive = make_model(backbone), make_model(backbone)
    naive_opt = torch.optim.Adam(naive.parameters(), lr=1e-2)
    naive_dir = DualDirection(rule)
    # A large α makes the three candidates clearly different, so choices vary between steps.
    dual_lr = 0.05 if rule != "sgd" else 5.0
    stepper = stepper_for(fused, rule, dual_lr)
    # Adam directions g / (|g| + ε) turn float rounding of ~1e-8 gradients (a sum divided by a
    # count here, a mean there) into ~1e-6 parameter differences that do not grow.
    atol = 1e-5 if rule == "adam" else 1e-6
    chosen = set()
    for step in range(4):
        unlabeled, test = make_batches(step)
        result = stepper.step(*unlabeled, *test)
        best, losses = naive_step(naive, naive_opt, naive_dir, unlabeled, test, dual_lr)
        assert CANDIDATES[int(result.choice)] == best
        chosen.add(best)
        torch.testing.assert_close(result.test_losses, torch.tensor(losses), rtol=1e-5, atol=1e-6)
        for (name, got), want in zip(fused.named_parameters(), naive.parameters(), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=atol, msg=name)
    # The comparison is only meaningful if more than one kind of step was taken.
    assert len(chosen) >= 2


def test_a_zero_direction_keeps_the_parameters_before_the_test_step():
    # With α = 0 all candidates tie; the tie must resolve to "none".
    model = make_model("gmf")
    stepper = InverseGradient(model, torch.optim.SGD(model.parameters(), lr=0.0), dual_lr=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    unlabeled, test = make_batches(0)
    result = stepper.step(*unlabeled, *test)
    assert CANDIDATES[int(result.choice)] == "none"
    for got, want in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(got, want)


def test_each_step_assigns_its_gradient_instead_of_accumulating_it():
    model = make_model("neumf")
    stepper = stepper_for(model, "adam", 1e-4)
    unlabeled, test = make_batches(1)
    stepper.step(*unlabeled, *test)
    first = [p.grad.clone() for p in model.parameters()]
    stepper.step(*unlabeled, *test)
    # Accumulation would make the second gradient the sum of both steps' gradients.
    for grad, old in zip((p.grad for p in model.parameters()), first, strict=True):
        assert not torch.allclose(grad, grad + old)
        assert not torch.allclose(grad, 2 * old)


def test_unknown_step_rule_is_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match="valid rules"):
        DualDirection("momentum")


def test_adam_direction_resumes_from_its_state():
    model, copy_model = make_model("gmf"), make_model("gmf")
    stepper, resumed = stepper_for(model, "adam", 0.05), stepper_for(copy_model, "adam", 0.05)
    for step in range(2):
        unlabeled, test = make_batches(step)
        stepper.step(*unlabeled, *test)
    # Deep copies stand in for a checkpoint round trip (Optimizer.load_state_dict would
    # otherwise share the moment tensors with the original).
    copy_model.load_state_dict(copy.deepcopy(model.state_dict()))
    resumed.optimizer.load_state_dict(copy.deepcopy(stepper.optimizer.state_dict()))
    resumed.load_state_dict(copy.deepcopy(stepper.state_dict()))
    unlabeled, test = make_batches(7)
    stepper.step(*unlabeled, *test)
    resumed.step(*unlabeled, *test)
    for got, want in zip(copy_model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(got, want)


def test_compiled_pieces_take_the_same_steps_as_eager():
    # compile=True is the fast path of benchmarks and long runs; it must not change the math.
    eager, compiled = make_model("gmf"), make_model("gmf")
    eager_stepper = stepper_for(eager, "sign", 0.05)
    compiled_stepper = stepper_for(compiled, "sign", 0.05, compile=True)
    for step in range(3):
        unlabeled, test = make_batches(step)
        a = eager_stepper.step(*unlabeled, *test)
        b = compiled_stepper.step(*unlabeled, *test)
        assert int(a.choice) == int(b.choice)
        for got, want in zip(compiled.parameters(), eager.parameters(), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def naive_aligned_gradient(model, users, items, temperature, test_grads):
    """The per-row direction row by row: c_r·∇z_r signed by sign(c_r·<∇z_r, ∇L_test>)."""
    params = dict(model.named_parameters())
    total = {name: torch.zeros_like(value) for name, value in params.items()}
    for user, item in zip(users, items, strict=True):
        logit = model(user.reshape(1), item.reshape(1))[0]
        row_grads = torch.autograd.grad(logit, list(params.values()), allow_unused=True)
        row_grads = [
            torch.zeros_like(p) if g is None else g
            for g, p in zip(row_grads, params.values(), strict=True)
        ]
        pos_weight, _ = idl_weights(logit.detach().reshape(1), temperature)
        slope = torch.sigmoid(logit.detach()) - pos_weight[0]
        alignment = sum(
            (g * test_grads[name]).sum() for g, name in zip(row_grads, params, strict=True)
        )
        sign = torch.sign(slope * alignment)
        for grad, name in zip(row_grads, params, strict=True):
            total[name] += sign * slope * grad
    return total


@pytest.mark.parametrize("backbone", ["gmf", "biased_mf", "neumf"])
def test_the_per_row_direction_equals_signing_each_rows_dual_gradient_one_by_one(backbone):
    model = make_model(backbone)
    (users, items), (test_users, test_items, labels) = make_batches(0)
    params = dict(model.named_parameters())
    logits = model(test_users, test_items)
    test_sum = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
    test_grads = dict(
        zip(params, torch.autograd.grad(test_sum, list(params.values())), strict=True)
    )
    grads, _, _ = aligned_dual_gradient(model, params, users, items, 0.5, test_grads)
    want = naive_aligned_gradient(model, users, items, 0.5, test_grads)
    for name in params:
        torch.testing.assert_close(grads[name], want[name], rtol=1e-4, atol=1e-7, msg=name)
    # Every row is kept or flipped so that it lowers the training-test loss to first order.
    alignment = sum((grads[name] * test_grads[name]).sum() for name in params)
    assert alignment > 0
