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
* the argmin is taken on device and the chosen point is formed with a mask, so a step never
  waits on the host (no ``.item()``): it can be captured in a CUDA graph;
* the loss computations are pure functions of tensors (:func:`dual_forward`,
  :func:`candidate_loss_sums`, :func:`chosen_forward`), so ``compile=True`` can hand each to
  ``torch.compile`` — on a launch-bound step, fusing their many small ops is where time goes;
* with ``sgd``/``sign`` directions and gather backbones in one process, the dual gradient, the
  direction and the update touch only the embedding rows the unlabeled batch touched (exact:
  every other row of ``s`` is zero).
* data parallel: the dual gradient, the three (loss sum, row count) pairs and the final gradient
  are all-reduced through :class:`~invlearn_ray.core.collective.Collective`, so every worker
  takes the same argmin and parameters stay identical without broadcasting (method.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from invlearn_ray.core.backbones import Backbone, Params, Representations
from invlearn_ray.core.collective import Collective, LocalCollective
from invlearn_ray.core.losses import idl_weights

CANDIDATES = ("none", "direct", "inverse")
"""Candidate order. ``none`` comes first so an exact tie (e.g. a zero direction) keeps θ."""

_CANDIDATE_SIGNS = (0.0, -1.0, 1.0)
"""θ_c = θ + sign_c · α · s: direct descends the dual loss, inverse ascends it."""

STEP_RULES = ("sgd", "sign", "adam")


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
        # A tensor, not an int, so a captured CUDA graph reads the current count at replay.
        self._steps: Tensor | None = None
        self._first: list[Tensor] = []
        self._second: list[Tensor] = []

    @property
    def works_on_touched_rows(self) -> bool:
        """``step(0) == 0`` and rows are independent: rows without gradient stay put."""
        return self.rule in ("sgd", "sign")

    def __call__(self, grads: list[Tensor]) -> list[Tensor]:
        if self.rule == "sgd":
            return grads
        if self.rule == "sign":
            return [grad.sign() for grad in grads]
        if not self._first:
            self._first = [torch.zeros_like(grad) for grad in grads]
            self._second = [torch.zeros_like(grad) for grad in grads]
            self._steps = torch.zeros((), device=grads[0].device)
        self._steps += 1
        beta1, beta2 = self.betas
        torch._foreach_lerp_(self._first, grads, 1.0 - beta1)
        torch._foreach_mul_(self._second, beta2)
        torch._foreach_addcmul_(self._second, grads, grads, 1.0 - beta2)
        first_correction = 1.0 - torch.pow(beta1, self._steps)
        second_correction = torch.sqrt(1.0 - torch.pow(beta2, self._steps))
        denominators = torch._foreach_sqrt(self._second)
        torch._foreach_div_(denominators, second_correction)
        torch._foreach_add_(denominators, self.eps)
        directions = torch._foreach_div(self._first, denominators)
        torch._foreach_div_(directions, first_correction)
        return directions

    def state_dict(self) -> dict:
        return {
            "rule": self.rule,
            "steps": self._steps,
            "first": self._first,
            "second": self._second,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["rule"] != self.rule:
            raise ValueError(f"checkpoint step rule {state['rule']!r} is not {self.rule!r}")
        self._steps = None if state["steps"] is None else state["steps"].clone()
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


# ----------------------------------------------------------------------------- pure pieces


def dual_forward(
    model: Backbone, reps: Representations, params: Params, temperature: float
) -> tuple[Tensor, Tensor]:
    """Σ_rows w¹·ℓ(z, 1) + w⁰·ℓ(z, 0) (paper eq. 4 before its mean) and w¹, from representations.

    The weights are stop-gradient (``idl_weights`` detaches); ``ℓ(z, 1) = softplus(−z)`` and
    ``ℓ(z, 0) = softplus(z)`` are the stable BCE forms.
    """
    logits = model.head(reps, params)
    pos_weights, neg_weights = idl_weights(logits, temperature)
    total = (pos_weights * F.softplus(-logits) + neg_weights * F.softplus(logits)).sum()
    return total, pos_weights


def candidate_loss_sums(
    model: Backbone,
    reps: Representations,
    step_reps: Representations,
    params: Params,
    head_steps: Params,
    labels: Tensor,
    signs: Tensor,
) -> Tensor:
    """``[3]`` training-test BCE sums at θ + signs[c]·s, from one batched forward of the head.

    The representation stage is linear in the tables, so the candidates' representations are
    ``reps(θ) + c·reps(s)``; only the head parameters are stacked three times.
    """
    candidate_reps = tuple(
        rep.unsqueeze(0) + signs.view(-1, *[1] * rep.dim()) * step_rep.unsqueeze(0)
        for rep, step_rep in zip(reps, step_reps, strict=True)
    )
    candidate_heads = {
        name: params[name].unsqueeze(0) + signs.view(-1, *[1] * step.dim()) * step.unsqueeze(0)
        for name, step in head_steps.items()
    }
    logits = torch.func.vmap(model.head)(candidate_reps, candidate_heads)
    per_row = F.binary_cross_entropy_with_logits(logits, labels.expand_as(logits), reduction="none")
    return per_row.sum(dim=1)


def chosen_forward(
    model: Backbone,
    reps: Representations,
    step_reps: Representations,
    params: Params,
    head_steps: Params,
    labels: Tensor,
    sign: Tensor,
) -> Tensor:
    """Training-test BCE sum at θ* = θ + sign·s; its gradient with respect to θ is ∇L(θ*)."""
    chosen_reps = tuple(
        rep + sign * step_rep for rep, step_rep in zip(reps, step_reps, strict=True)
    )
    chosen_heads = {name: params[name] + sign * step for name, step in head_steps.items()}
    logits = model.head(chosen_reps, {**params, **chosen_heads})
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")


def _reduced_gradient(
    loss_sum: Tensor, count: int, inputs: list[Tensor], collective: Collective
) -> list[Tensor]:
    """∇ of the global mean loss: local sums, one all-reduce with the row count, then divide."""
    grads = list(torch.autograd.grad(loss_sum, inputs))
    total = torch.full((1,), float(count), device=loss_sum.device)
    collective.all_reduce_sum_([*grads, total])
    torch._foreach_div_(grads, total.clamp(min=1.0)[0])
    return grads


# ----------------------------------------------------------------------------- directions


class _Direction:
    """``s`` held densely: one tensor per parameter."""

    def __init__(self, model: Backbone, named: dict[str, Tensor], steps: dict[str, Tensor]):
        self.model, self.named, self.steps = model, named, steps
        self.heads = {name: steps[name] for name in model.head_names()}

    def representations(self, users: Tensor, items: Tensor) -> Representations:
        with torch.no_grad():
            return self.model.representations(users, items, self.steps)

    def move(self, scale: Tensor) -> None:
        """θ ← θ + scale·s."""
        with torch.no_grad():
            torch._foreach_add_(
                list(self.named.values()),
                torch._foreach_mul([self.steps[name] for name in self.named], scale),
            )


class _TouchedRowsDirection(_Direction):
    """``s`` held only on the embedding rows the unlabeled batch touched (zero elsewhere)."""

    def __init__(
        self,
        model: Backbone,
        named: dict[str, Tensor],
        steps: dict[str, Tensor],
        touched: dict[str, Tensor],
    ):
        self.touched = touched
        self.padded = {  # a zero row at the end stands for every untouched row
            name: torch.cat([steps[name], steps[name].new_zeros(1, steps[name].shape[1])])
            for name in model.table_index
        }
        super().__init__(model, named, {**steps, **self.padded})

    def _positions(self, kind: str, ids: Tensor) -> Tensor:
        """Row of each id among the touched rows, or the zero row when it was not touched."""
        touched = self.touched[kind]
        position = torch.searchsorted(touched, ids).clamp(max=len(touched) - 1)
        return torch.where(touched[position] == ids, position, len(touched))

    def representations(self, users: Tensor, items: Tensor) -> Representations:
        with torch.no_grad():
            return self.model.representations(
                self._positions("user", users), self._positions("item", items), self.steps
            )

    def move(self, scale: Tensor) -> None:
        with torch.no_grad():
            for name, param in self.named.items():
                kind = self.model.table_index.get(name)
                if kind is None:
                    param.add_(self.steps[name] * scale)
                else:
                    param.index_add_(0, self.touched[kind], self.padded[name][:-1] * scale)


# ----------------------------------------------------------------------------- the step


class InverseGradient:
    """Takes IG meta steps on one model (Algorithm 1, lines 9–18).

    Args:
        model: the backbone; its parameters are updated in place.
        optimizer: the persistent optimizer of the test-loss step (learning rate γ); it must
            hold exactly ``model.parameters()``.
        dual_lr: α, the candidate step size (the paper: α = 0.1·γ).
        step_rule: ``step(g)`` — see :class:`DualDirection`.
        temperature: exponent of the IDL weights (1 = paper eq. 4; see ``idl_weights``).
        collective: reductions across data-parallel workers (default: one process).
        compile: hand the pure loss functions to ``torch.compile`` (worth it for long runs:
            compiling costs seconds once, then each step runs fused kernels).
    """

    def __init__(
        self,
        model: Backbone,
        optimizer: torch.optim.Optimizer,
        dual_lr: float,
        step_rule: str = "sign",
        temperature: float = 1.0,
        collective: Collective | None = None,
        compile: bool = False,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.optimizer = optimizer
        self.dual_lr = dual_lr
        self.temperature = temperature
        self.direction = DualDirection(step_rule)
        self.collective = collective or LocalCollective()
        wrap = torch.compile if compile else (lambda fn: fn)
        self._dual_forward = wrap(dual_forward)
        self._candidate_loss_sums = wrap(candidate_loss_sums)
        self._chosen_forward = wrap(chosen_forward)

    @property
    def _row_wise(self) -> bool:
        # CPU only: on a GPU the dense path is cheap (tables are small next to its bandwidth)
        # and torch.unique's data-dependent size would prevent CUDA-graph capture.
        return (
            self.device.type == "cpu"
            and self.collective.world_size == 1
            and self.model.table_index is not None
            and self.direction.works_on_touched_rows
        )

    def _dual_direction(self, named: dict[str, Tensor], users: Tensor, items: Tensor):
        """Lines 9–11: ``g = ∇L_dual(θ; U)``, ``s = step(g)``; also the IDL weights.

        Row-wise (one process, gather backbone, stateless rule): differentiate with respect to
        the gathered rows and sum them into the touched table rows — O(batch), not O(table).
        Otherwise (data parallel: gradients of different rows must be summed across workers;
        LightGCN; Adam directions): dense gradients of every parameter.
        """
        model, collective = self.model, self.collective
        if not self._row_wise:
            reps = model.representations(users, items, named)
            total, pos_weights = self._dual_forward(model, reps, named, self.temperature)
            grads = _reduced_gradient(total, len(users), list(named.values()), collective)
            steps = dict(zip(named, self.direction(grads), strict=True))
            return _Direction(model, named, steps), pos_weights

        touched, inverse = {}, {}
        touched["user"], inverse["user"] = torch.unique(users, return_inverse=True)
        touched["item"], inverse["item"] = torch.unique(items, return_inverse=True)
        with torch.no_grad():
            gathered = model.representations(users, items, named)
        leaves = tuple(rep.requires_grad_() for rep in gathered)
        total, pos_weights = self._dual_forward(model, leaves, named, self.temperature)
        head_names = model.head_names()
        inputs = [*leaves, *(named[name] for name in head_names)]
        grads = _reduced_gradient(total, len(users), inputs, collective)
        row_grads = []
        for name, rep_grad in zip(model.table_names, grads, strict=False):
            kind = model.table_index[name]
            rows = rep_grad.new_zeros(len(touched[kind]), rep_grad.shape[1])
            row_grads.append(rows.index_add_(0, inverse[kind], rep_grad))
        names = [*model.table_names, *head_names]
        steps = dict(zip(names, self.direction([*row_grads, *grads[len(leaves) :]]), strict=True))
        return _TouchedRowsDirection(model, named, steps, touched), pos_weights

    def step(
        self,
        unlabeled_users: Tensor,
        unlabeled_items: Tensor,
        test_users: Tensor,
        test_items: Tensor,
        test_labels: Tensor,
    ) -> MetaStepResult:
        """One meta step on this worker's share of the batches ``U`` and ``T``."""
        model, collective = self.model, self.collective
        named = model.params()
        params = list(named.values())
        direction, pos_weights = self._dual_direction(named, unlabeled_users, unlabeled_items)

        # Lines 13–16: the three training-test losses, then one argmin on every worker.
        index = torch.arange(3, device=test_labels.device)
        signs = ((index == 2).to(test_labels.dtype) - (index == 1).to(test_labels.dtype)) * (
            self.dual_lr
        )
        reps = model.representations(test_users, test_items, named)
        step_reps = direction.representations(test_users, test_items)
        with torch.no_grad():
            sums = self._candidate_loss_sums(
                model,
                tuple(r.detach() for r in reps),
                step_reps,
                {k: v.detach() for k, v in named.items()},
                direction.heads,
                test_labels,
                signs,
            )
            totals = torch.cat([sums, torch.full_like(sums[:1], len(test_labels))])
        collective.all_reduce_sum_([totals])
        test_losses = totals[:3] / totals[3].clamp(min=1.0)
        choice = torch.argmin(test_losses)
        # A mask, not indexing or one_hot: no host sync, so the step can be graph-captured.
        sign = (signs * (index == choice)).sum()

        # Lines 17–18: θ ← θ* − γ·Adam(∇L_test(θ*)), the gradient taken at θ* from the rows
        # already gathered.
        loss_sum = self._chosen_forward(
            model, reps, step_reps, named, direction.heads, test_labels, sign
        )
        grads = _reduced_gradient(loss_sum, len(test_labels), params, collective)
        direction.move(sign)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        self.optimizer.step()
        return MetaStepResult(choice=choice, test_losses=test_losses, pos_weights=pos_weights)

    def state_dict(self) -> dict:
        return {"direction": self.direction.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.direction.load_state_dict(state["direction"])
