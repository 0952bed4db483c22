"""Inverse Gradient (IG): one meta step of the paper's Algorithm 1, lines 8–18.

Given a batch ``U`` of unlabeled rows and a batch ``T`` of training-test rows::

    g  = ∇ L_dual(θ; U)                      one gradient (inverse candidate is its negation)
    s  = step(g)                              sgd: g · sign: sign(g) · adam: persistent Adam
    θ* = argmin_{θ, θ − α·s, θ + α·s} L_test(·; T)   three losses from one batched forward
    θ  ← θ* − γ · Adam(∇ L_test(θ*; T))

What this implementation does differently from the paper's released code, and why:

* no model copies and no optimizer re-creation: the candidates are evaluated functionally, and
  the test-loss step uses the caller's persistent optimizer (the released code re-creates Adam
  every step, which makes each update ≈ lr·sign(g); ``step_rule="sign"`` reproduces that for
  the dual direction on purpose);
* gradients are computed with ``torch.autograd.grad`` and assigned, so nothing accumulates
  across steps (the released code never zeroes the candidate copies' gradients);
* the three candidates share one forward: the backbone's representation stage is linear in the
  embedding tables, so ``reps(θ + c·α·s) = reps(θ) + c·α·reps(s)`` is formed from gathered rows
  and only the small head is stacked three times (``torch.func.vmap``);
* the argmin is taken on device and the chosen loss is selected with a one-hot mask, so a step
  never waits on the host (no ``.item()``), which keeps GPU steps launch-bound-friendly;
* data parallel: the dual gradient, the three (loss sum, row count) pairs and the final gradient
  are all-reduced through :class:`~invlearn_ray.core.collective.Collective`, so every worker
  takes the same argmin and parameters stay identical without broadcasting (method.md §4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from invlearn_ray.core.backbones import Backbone
from invlearn_ray.core.collective import Collective, LocalCollective

CANDIDATES = ("none", "direct", "inverse")
"""Candidate order. ``none`` comes first so an exact tie (e.g. a zero direction) keeps θ."""

_CANDIDATE_SIGNS = (0.0, -1.0, 1.0)
"""θ_c = θ + sign_c · α · s: direct descends the dual loss, inverse ascends it."""

STEP_RULES = ("sgd", "sign", "adam")

DualWeightsFn = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``logits -> (w_pos, w_neg)``: the per-row (stop-gradient) weights of a dual loss."""


class DualDirection:
    """``step(g)``: how the dual-loss gradient becomes the candidate direction ``s``.

    * ``sgd`` — ``s = g``. Faithful to Algorithm 1 as written, but with the paper's
      α = 0.1·γ ≈ 1e-5 the move is negligible: a mean gradient has per-row magnitude ~1/B.
    * ``sign`` — ``s = sign(g)``: what the released code does in effect (a freshly created
      Adam's first step is lr·g/|g|).
    * ``adam`` — ``s = m̂ / (√v̂ + ε)`` from Adam moments kept across meta steps: the scale of
      ``sign`` with the noise averaged out.
    """

    def __init__(
        self, rule: str = "adam", betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        if rule not in STEP_RULES:
            raise ValueError(f"unknown step rule {rule!r}; valid rules: {list(STEP_RULES)}")
        self.rule = rule
        self.betas = betas
        self.eps = eps
        self.steps = 0
        self._first: list[Tensor] = []
        self._second: list[Tensor] = []

    def __call__(self, grads: list[Tensor]) -> list[Tensor]:
        if self.rule == "sgd":
            return grads
        if self.rule == "sign":
            return [grad.sign() for grad in grads]
        if not self._first:
            self._first = [torch.zeros_like(grad) for grad in grads]
            self._second = [torch.zeros_like(grad) for grad in grads]
        self.steps += 1
        beta1, beta2 = self.betas
        torch._foreach_lerp_(self._first, grads, 1.0 - beta1)
        torch._foreach_mul_(self._second, beta2)
        torch._foreach_addcmul_(self._second, grads, grads, 1.0 - beta2)
        first_correction = 1.0 - beta1**self.steps
        second_correction = (1.0 - beta2**self.steps) ** 0.5
        denominators = torch._foreach_sqrt(self._second)
        torch._foreach_div_(denominators, second_correction)
        torch._foreach_add_(denominators, self.eps)
        directions = torch._foreach_div(self._first, denominators)
        torch._foreach_div_(directions, first_correction)
        return directions

    def state_dict(self) -> dict:
        return {
            "rule": self.rule,
            "steps": self.steps,
            "first": self._first,
            "second": self._second,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["rule"] != self.rule:
            raise ValueError(f"checkpoint step rule {state['rule']!r} is not {self.rule!r}")
        self.steps = state["steps"]
        self._first = [tensor.clone() for tensor in state["first"]]
        self._second = [tensor.clone() for tensor in state["second"]]


@dataclass(frozen=True)
class MetaStepResult:
    """What one meta step decided; tensors stay on the device (no host sync per step)."""

    choice: Tensor
    """0-dim index into :data:`CANDIDATES`."""
    test_losses: Tensor
    """``[3]`` mean training-test BCE of (none, direct, inverse), before the final step."""
    pos_weights: Tensor
    """Per-row IDL weight of the positive label on this worker's unlabeled rows (detached)."""


def dual_loss_sum(logits: Tensor, pos_weights: Tensor, neg_weights: Tensor) -> Tensor:
    """Σ w1·ℓ(z, 1) + w0·ℓ(z, 0) over rows (paper eq. 4 before its mean), weights stop-grad.

    ``ℓ(z, 1) = softplus(−z)`` and ``ℓ(z, 0) = softplus(z)`` are the stable BCE forms.
    """
    return (pos_weights * F.softplus(-logits) + neg_weights * F.softplus(logits)).sum()


def _reduced_gradient(
    loss_sum: Tensor, count: int, params: list[Tensor], collective: Collective
) -> list[Tensor]:
    """∇ of the global mean loss: local sums, one all-reduce with the row count, then divide."""
    grads = list(torch.autograd.grad(loss_sum, params))
    total = torch.tensor([float(count)], device=loss_sum.device)
    collective.all_reduce_sum_([*grads, total])
    torch._foreach_div_(grads, total.clamp(min=1.0)[0])
    return grads


def inverse_gradient_step(
    model: Backbone,
    optimizer: torch.optim.Optimizer,
    direction: DualDirection,
    unlabeled_users: Tensor,
    unlabeled_items: Tensor,
    test_users: Tensor,
    test_items: Tensor,
    test_labels: Tensor,
    dual_lr: float,
    dual_weights: DualWeightsFn,
    collective: Collective | None = None,
) -> MetaStepResult:
    """One IG meta step (Algorithm 1, lines 9–18) on this worker's share of the two batches.

    Args:
        model: the backbone; its parameters are updated in place.
        optimizer: the persistent optimizer of the test-loss step (learning rate γ); it must
            hold exactly ``model.parameters()``.
        direction: ``step(g)`` with its state (see :class:`DualDirection`).
        unlabeled_users, unlabeled_items: the batch ``U`` the dual loss is computed on.
        test_users, test_items, test_labels: the training-test batch ``T``.
        dual_lr: α, the candidate step size (the paper: α = 0.1·γ).
        dual_weights: ``logits -> (w_pos, w_neg)``, e.g. the IDL weights of paper eq. 4.
        collective: reduction across data-parallel workers (default: one process).

    Returns:
        The chosen candidate, the three training-test losses and the IDL weights.
    """
    collective = collective or LocalCollective()
    named = model.params()
    names = list(named)
    params = list(named.values())

    unlabeled_logits = model(unlabeled_users, unlabeled_items, named)
    pos_weights, neg_weights = dual_weights(unlabeled_logits)
    dual_sum = dual_loss_sum(unlabeled_logits, pos_weights.detach(), neg_weights.detach())
    dual_grads = _reduced_gradient(dual_sum, len(unlabeled_users), params, collective)
    steps = dict(zip(names, direction(dual_grads), strict=True))

    signs = torch.tensor(_CANDIDATE_SIGNS, device=test_labels.device) * dual_lr
    reps = model.representations(test_users, test_items, named)
    with torch.no_grad():
        step_reps = model.representations(test_users, test_items, steps)
    candidate_reps = tuple(
        rep.unsqueeze(0) + signs.view(-1, *[1] * rep.dim()) * step_rep.unsqueeze(0)
        for rep, step_rep in zip(reps, step_reps, strict=True)
    )
    candidate_heads = {
        name: named[name].unsqueeze(0)
        + signs.view(-1, *[1] * named[name].dim()) * steps[name].unsqueeze(0)
        for name in model.head_names()
    }
    candidate_logits = torch.func.vmap(model.head)(candidate_reps, candidate_heads)
    per_row = F.binary_cross_entropy_with_logits(
        candidate_logits, test_labels.expand_as(candidate_logits), reduction="none"
    )
    loss_sums = per_row.sum(dim=1)

    totals = torch.cat([loss_sums.detach(), loss_sums.new_tensor([float(len(test_labels))])])
    collective.all_reduce_sum_([totals])
    test_losses = totals[:3] / totals[3].clamp(min=1.0)
    choice = torch.argmin(test_losses)
    chosen = F.one_hot(choice, num_classes=3).to(loss_sums.dtype)
    test_grads = _reduced_gradient((loss_sums * chosen).sum(), len(test_labels), params, collective)

    with torch.no_grad():
        chosen_sign = signs[choice]
        for name, param in zip(names, params, strict=True):
            param.add_(steps[name] * chosen_sign)
    for param, grad in zip(params, test_grads, strict=True):
        param.grad = grad
    optimizer.step()
    return MetaStepResult(choice=choice, test_losses=test_losses, pos_weights=pos_weights.detach())
