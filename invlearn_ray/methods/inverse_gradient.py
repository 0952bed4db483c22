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
* the step is three pure functions — :func:`dual_gradient`, :func:`candidate_loss_sums`,
  :func:`chosen_gradient` (gradients by ``torch.func``) — with the data-parallel reductions
  between them, so ``compile=True`` can hand each whole to ``torch.compile``: a batch-1024 step
  is launch/dispatch-bound, and fusing its many small ops is where the time goes.
* touched rows only: for backbones whose tables are row gathers (``table_index``), the dual
  gradient is taken on the rows ``U`` reads and the candidates and the test gradient on the
  rows ``T`` reads (:mod:`~invlearn_ray.optim.touched_rows`); the direction of the ``sgd`` and
  ``sign`` rules is zero elsewhere, so forming θ* updates those rows only. Nothing in a meta
  step but the optimizer (and the ``adam`` rule's moments) costs O(table);
* data parallel: the dual gradient, the three (loss sum, row count) pairs and the final gradient
  are reduced through :class:`~invlearn_ray.optim.collective.Collective` (row gradients as
  exchanged touched rows, :class:`~invlearn_ray.optim.gradients.WorkerMean`), so every worker
  takes the same argmin and parameters stay identical without broadcasting (method.md §4);
* tables sharded by row (``tables``, :mod:`~invlearn_ray.optim.sharded_tables`): the same
  step on the global union of the workers' rows, looked up once for both batches; each worker
  moves and updates the rows it holds.

This project's variant (``direction="per_row"``, issue 13): Algorithm 1 makes one choice per
batch, so a batch of mostly-right and some wrong IDL annotations moves as one. The per-row
direction signs each unlabeled row's dual-loss gradient by its first-order alignment with the
training-test gradient (:func:`aligned_dual_gradient`) before the same three-candidate choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from invlearn_ray.methods.losses import idl_weights
from invlearn_ray.models.backbones import Backbone, Params
from invlearn_ray.optim.collective import Collective, LocalCollective
from invlearn_ray.optim.gradients import (
    Gradient,
    RowGradient,
    WorkerMean,
    grad_and_value,
    reduce_mean_,
)
from invlearn_ray.optim.optimizers import ParameterUpdate, as_parameter_update
from invlearn_ray.optim.sharded_tables import ShardedTables
from invlearn_ray.optim.touched_rows import rows_of

CANDIDATES = ("none", "direct", "inverse")
"""Candidate order. ``none`` comes first so an exact tie (e.g. a zero direction) keeps θ."""

_CANDIDATE_SIGNS = (0.0, -1.0, 1.0)
"""θ_c = θ + sign_c · α · s: direct descends the dual loss, inverse ascends it."""

STEP_RULES = ("sgd", "sign", "adam")
DIRECTIONS = ("batch", "per_row")


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

    def __call__(self, grads: list[Gradient]) -> list[Gradient]:
        """The direction of each gradient; row gradients stay row gradients under ``sgd`` and
        ``sign`` (zero maps to zero), the ``adam`` rule's moments are dense (O(table))."""
        if self.rule == "sgd":
            return grads
        if self.rule == "sign":
            return [
                grad.map_rows(torch.sign) if isinstance(grad, RowGradient) else grad.sign()
                for grad in grads
            ]
        grads = [grad.dense() if isinstance(grad, RowGradient) else grad for grad in grads]
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
    """Per-row IDL weight of the positive label on this worker's unlabeled rows."""


# ----------------------------------------------------------------------------- pure pieces


def dual_gradient(
    model: Backbone,
    params: Params,
    users: Tensor,
    items: Tensor,
    temperature: float,
    functional: bool = False,
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """∇θ of Σ_rows w¹·ℓ(z, 1) + w⁰·ℓ(z, 0) (paper eq. 4 before its mean), the sum and w¹.

    The weights are stop-gradient (``idl_weights`` detaches); ``ℓ(z, 1) = softplus(−z)`` and
    ``ℓ(z, 0) = softplus(z)`` are the stable BCE forms.
    """

    def dual_sum(theta: Params) -> tuple[Tensor, Tensor]:
        logits = model(users, items, theta)
        pos_weights, neg_weights = idl_weights(logits, temperature)
        total = (pos_weights * F.softplus(-logits) + neg_weights * F.softplus(logits)).sum()
        return total, pos_weights

    grads, (total, pos_weights) = grad_and_value(dual_sum, params, functional)
    return grads, total, pos_weights


def test_gradient(
    model: Backbone, params: Params, users: Tensor, items: Tensor, labels: Tensor
) -> dict[str, Tensor]:
    """∇θ of the training-test BCE sum at θ (the per-row direction's reference)."""

    def test_sum(theta: Params) -> tuple[Tensor, tuple[()]]:
        logits = model(users, items, theta)
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum"), ()

    grads, _ = grad_and_value(test_sum, dict(params), functional=False)
    return grads


def aligned_dual_gradient(
    model: Backbone,
    params: Params,
    users: Tensor,
    items: Tensor,
    temperature: float,
    test_grads: Params,
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """∇θ of Σ_r s_r·(w¹ℓ(z_r, 1) + w⁰ℓ(z_r, 0)), each row signed by its alignment with ∇L_test.

    A row's dual-loss gradient is ``c_r·∇z_r`` with ``c_r = ∂ℓ_dual/∂z_r = σ(z_r) − w¹_r``
    (weights stop-gradient). Descending it changes the training-test loss, to first order, by
    ``−α·c_r·d_r`` with ``d_r = <∇z_r, ∇L_test>``. So ``s_r = sign(c_r·d_r)`` keeps the rows
    whose IDL annotation the training-test data agrees with and flips the others (a zero
    alignment drops the row); the direct candidate then descends the test loss to first order
    (its inner product with ∇L_test is ``Σ_r |c_r·d_r| ≥ 0``). All ``d_r`` come from one
    forward-mode product (``torch.func.jvp``) over the unlabeled rows: time ∝ 2 forwards + 1
    backward of the rows, memory ∝ rows. ``test_grads`` must be the (all-reduced) mean
    training-test gradient at ``params``.

    Returns:
        The gradient (local sum over the rows), the signed loss sum and the rows' w¹.
    """
    detached = {name: value.detach() for name, value in params.items()}
    tangents = {name: test_grads[name] for name in detached}
    logits, along_test = torch.func.jvp(
        lambda theta: model(users, items, theta), (detached,), (tangents,)
    )
    pos_weights, _ = idl_weights(logits, temperature)
    signs = torch.sign((torch.sigmoid(logits) - pos_weights) * along_test).detach()

    def signed_sum(theta: Params) -> tuple[Tensor, Tensor]:
        z = model(users, items, theta)
        pos, neg = idl_weights(z, temperature)
        return (signs * (pos * F.softplus(-z) + neg * F.softplus(z))).sum(), pos

    grads, (total, pos_weights) = grad_and_value(signed_sum, detached, functional=False)
    return grads, total, pos_weights


def candidate_loss_sums(
    model: Backbone,
    params: Params,
    steps: Params,
    users: Tensor,
    items: Tensor,
    labels: Tensor,
    signs: Tensor,
) -> Tensor:
    """``[3]`` training-test BCE sums at θ + signs[c]·s, from one batched forward of the head.

    The representation stage is linear in the tables, so the candidates' representations are
    ``reps(θ) + c·reps(s)``: the rows are gathered (or propagated) once for θ and once for s,
    and only the small head is stacked three times.
    """
    reps = model.representations(users, items, params)
    step_reps = model.representations(users, items, steps)
    candidate_reps = tuple(
        rep.unsqueeze(0) + signs.view(-1, *[1] * rep.dim()) * step_rep.unsqueeze(0)
        for rep, step_rep in zip(reps, step_reps, strict=True)
    )
    candidate_heads = {
        name: params[name].unsqueeze(0)
        + signs.view(-1, *[1] * params[name].dim()) * steps[name].unsqueeze(0)
        for name in model.head_names()
    }
    logits = torch.func.vmap(model.head)(candidate_reps, candidate_heads)
    per_row = F.binary_cross_entropy_with_logits(logits, labels.expand_as(logits), reduction="none")
    return per_row.sum(dim=1)


def chosen_gradient(
    model: Backbone,
    params: Params,
    steps: Params,
    sign: Tensor,
    users: Tensor,
    items: Tensor,
    labels: Tensor,
    functional: bool = False,
) -> tuple[dict[str, Tensor], Tensor]:
    """∇θ of the training-test BCE sum at θ* = θ + sign·s — that is, ∇L(θ*) — and the sum."""

    def test_sum(theta: Params) -> tuple[Tensor, tuple[()]]:
        chosen = {name: theta[name] + sign * steps[name] for name in theta}
        logits = model(users, items, chosen)
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum"), ()

    grads, (total, _) = grad_and_value(test_sum, params, functional)
    return grads, total


# ----------------------------------------------------------------------------- the step


class InverseGradient:
    """Takes IG meta steps on one model (Algorithm 1, lines 9–18).

    Args:
        model: the backbone; its parameters are updated in place.
        optimizer: the persistent optimizer of the test-loss step (learning rate γ): a
            :class:`~invlearn_ray.optim.optimizers.ParameterUpdate`, or a torch optimizer holding
            exactly ``model.parameters()``.
        dual_lr: α, the candidate step size (the paper: α = 0.1·γ).
        step_rule: ``step(g)`` — see :class:`DualDirection`.
        temperature: exponent of the IDL weights (1 = paper eq. 4; see ``idl_weights``).
        collective: reductions across data-parallel workers (default: one process).
        compile: hand the three pure pieces to ``torch.compile`` (costs seconds once; each step
            then runs a few fused kernels instead of a few hundred small ones).
        touched_rows: differentiate the rows the batches read, not the whole tables (default:
            unless compiled — compiled and CUDA-graphed steps need shapes independent of the
            batch's ids). Backbones without ``table_index`` always take dense gradients.
        direction: ``batch`` (Algorithm 1) or ``per_row`` (:func:`aligned_dual_gradient`;
            eager only, dense gradients: one more training-test gradient and a forward-mode
            product per step).
        tables: the model's tables sharded by row across the workers (``model`` is then the
            sharded backbone and ``optimizer`` a ``ShardedUpdate``); None when replicated.
    """

    def __init__(
        self,
        model: Backbone,
        optimizer: torch.optim.Optimizer | ParameterUpdate,
        dual_lr: float,
        step_rule: str = "sign",
        temperature: float = 1.0,
        collective: Collective | None = None,
        compile: bool = False,
        touched_rows: bool | None = None,
        direction: str = "batch",
        tables: ShardedTables | None = None,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown IG direction {direction!r}; valid: {list(DIRECTIONS)}")
        if direction == "per_row" and compile:
            raise ValueError("the per_row IG direction runs eagerly; turn compile off")
        self.per_row = direction == "per_row"
        self.model = model
        self.optimizer = as_parameter_update(model, optimizer)
        # per_row signs rows against the whole training-test gradient: dense parameters.
        self.touched_rows = (
            False if self.per_row else (not compile if touched_rows is None else touched_rows)
        )
        self.temperature = temperature
        self.direction = DualDirection(step_rule)
        self.collective = collective or LocalCollective()
        if tables is not None and (self.per_row or step_rule == "adam" or compile):
            raise ValueError(
                "sharded tables take the batch direction with the sgd or sign rule, eagerly: "
                "per_row and the adam rule keep table-sized gradients or moments per worker"
            )
        self.tables = tables
        self._dual_mean = tables.mean() if tables else WorkerMean(self.collective)
        self._test_mean = tables.mean() if tables else WorkerMean(self.collective)
        device = next(model.parameters()).device
        # Constants of every step, made once (and outside any CUDA-graph capture).
        self._index = torch.arange(3, device=device)
        self._signs = ((self._index == 2).float() - (self._index == 1).float()) * dual_lr
        self._functional = compile  # torch.func inside compiled code, autograd in eager
        wrap = torch.compile if compile else (lambda fn: fn)
        self._dual_gradient = wrap(dual_gradient)
        self._candidate_loss_sums = wrap(candidate_loss_sums)
        self._chosen_gradient = wrap(chosen_gradient)

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
        params = {name: param.detach() for name, param in model.named_parameters()}
        read_u = {"user": [unlabeled_users], "item": [unlabeled_items]}
        read_t = {"user": [test_users], "item": [test_items]}
        if self.tables is not None:
            # θ does not move before the final update: one lookup serves both batches.
            read_by_u, read_by_t = self.tables.rows_of(read_u, read_t)
        else:
            read_by_u = rows_of(model, read_u, self.touched_rows)
            read_by_t = rows_of(model, read_t, self.touched_rows)

        # Lines 9–11: one dual gradient; the inverse candidate is its negation.
        if self.per_row:
            # Dense parameters (touched_rows is off for per_row): the reference gradient
            # signs each unlabeled row against the whole training-test gradient.
            reference = test_gradient(model, params, test_users, test_items, test_labels)
            reduce_mean_(list(reference.values()), len(test_labels), collective)
            grads, _, pos_weights = aligned_dual_gradient(
                model, params, unlabeled_users, unlabeled_items, self.temperature, reference
            )
        else:
            grads, _, pos_weights = self._dual_gradient(
                model,
                read_by_u.gather(params),
                read_by_u.renumbered["user"][0],
                read_by_u.renumbered["item"][0],
                self.temperature,
                self._functional,
            )
        dual = self._dual_mean(read_by_u.row_gradients(grads, params), len(unlabeled_users))
        steps = dict(zip(params, self.direction(list(dual.values())), strict=True))

        # Lines 13–16: the three training-test losses, then the same argmin on every worker.
        test_params, test_steps = read_by_t.gather(params), read_by_t.gather(steps)
        test_users, test_items = read_by_t.renumbered["user"][0], read_by_t.renumbered["item"][0]
        sums = self._candidate_loss_sums(
            model, test_params, test_steps, test_users, test_items, test_labels, self._signs
        )
        totals = torch.cat([sums, torch.full_like(sums[:1], len(test_labels))])
        collective.all_reduce_sum_([totals])
        test_losses = totals[:3] / totals[3].clamp(min=1.0)
        choice = torch.argmin(test_losses)
        # A mask, not indexing or one_hot: no host sync, so the step can be graph-captured.
        sign = (self._signs * (self._index == choice)).sum()

        # Lines 17–18: θ ← θ* − γ·Adam(∇L_test(θ*)).
        test_grads, _ = self._chosen_gradient(
            model,
            test_params,
            test_steps,
            sign,
            test_users,
            test_items,
            test_labels,
            self._functional,
        )
        test_mean = self._test_mean(read_by_t.row_gradients(test_grads, params), len(test_labels))
        if self.tables is not None:
            _move_(self.tables.localize(params), self.tables.localize(steps), sign)
        else:
            _move_(params, steps, sign)
        self.optimizer.step(test_mean)
        return MetaStepResult(choice=choice, test_losses=test_losses, pos_weights=pos_weights)

    def state_dict(self) -> dict:
        return {"direction": self.direction.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.direction.load_state_dict(state["direction"])


@torch.no_grad()
def _move_(params: Params, steps: dict[str, Gradient], scale: Tensor) -> None:
    """θ ← θ + scale·s in place: dense directions everywhere, row directions on their rows."""
    dense = [name for name, step in steps.items() if not isinstance(step, RowGradient)]
    if dense:
        torch._foreach_add_(
            [params[name] for name in dense],
            torch._foreach_mul([steps[name] for name in dense], scale),
        )
    for name, step in steps.items():
        if isinstance(step, RowGradient):
            params[name].index_add_(0, step.indices, step.rows * scale)
