"""Every training loss of the method and its baselines, as pure functions of logits.

Four call shapes (:mod:`invlearn_ray.methods.objectives` decides which rows feed which loss):

* **pointwise** ``(logits [B], labels [B], ...)``: BCE (methods *None* and *NS*), T-CE, R-CE,
  binary focal loss;
* **unlabeled** ``(logits [B], ...)``: the Inverse Dual Loss (IDL), which needs no label;
* **sampled softmax** ``(pos_logits [B], neg_logits [B, N], ...)``: SL and BSL;
* **candidate set** ``(logits [B, C], target [B], ...)``: explicit negative feedback in softmax
  models (ε-smoothed negative-weight CE, complement likelihood) and the softmax focal loss.

Numerics: every loss is written with ``softplus`` / ``logsigmoid`` / ``logsumexp`` /
``log_softmax`` and never takes the log of a probability, so value and gradient stay finite for
logits up to ±1e4 in float32 (``tests/methods/test_losses.py`` checks each function there).

Reductions: ``reduction="mean"`` (the default) averages over rows — over *users* for BSL and over
the *kept* rows for T-CE; ``"sum"`` adds them (what data-parallel code all-reduces together with a
count); ``"none"`` returns the per-row values. An optional per-row ``weights`` tensor is multiplied
in before the reduction, so ``"mean"`` is ``mean(weights * loss)``.

The pointwise and unlabeled losses do no data-dependent checks, so they run under
``torch.func.vmap`` (Inverse Gradient scores its three parameter candidates in one batched call).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")

# Below this argument softplus(x) equals exp(x) to float64 precision, so log(softplus(x)) = x.
_LOG_SOFTPLUS_LINEAR_BELOW = -20.0


# --------------------------------------------------------------------------------------------
# Shared checks and helpers
# --------------------------------------------------------------------------------------------


def _reduce(per_row: Tensor, weights: Tensor | None, reduction: str, where: str) -> Tensor:
    if weights is not None:
        if weights.shape != per_row.shape:
            raise ValueError(
                f"{where}: weights have shape {tuple(weights.shape)} but the per-row loss has "
                f"shape {tuple(per_row.shape)}; pass one weight per row"
            )
        per_row = per_row * weights
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    if reduction == "mean":
        if per_row.numel() == 0:
            raise ValueError(
                f"{where}: the mean over an empty batch is undefined; "
                "skip the batch or use reduction='sum'"
            )
        return per_row.mean()
    raise ValueError(f"{where}: unknown reduction {reduction!r}; valid: {list(REDUCTIONS)}")


def _check_pointwise(logits: Tensor, labels: Tensor, where: str) -> Tensor:
    if logits.shape != labels.shape:
        raise ValueError(
            f"{where}: logits have shape {tuple(logits.shape)} but labels have shape "
            f"{tuple(labels.shape)}; pass one label per logit"
        )
    if not logits.is_floating_point():
        raise TypeError(f"{where}: logits must be a floating tensor, got {logits.dtype}")
    return labels.to(logits.dtype)


def _check_positive(value: float, name: str, where: str) -> None:
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{where}: {name} must be a finite number > 0, got {value!r}")


def _check_non_negative(value: float, name: str, where: str) -> None:
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{where}: {name} must be a finite number >= 0, got {value!r}")


def _check_candidates(logits: Tensor, target: Tensor, where: str) -> None:
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"{where}: logits must have shape [batch, candidates] with at least 2 candidates, "
            f"got {tuple(logits.shape)}"
        )
    if target.shape != logits.shape[:1] or target.dtype != torch.int64:
        raise ValueError(
            f"{where}: target must be an int64 tensor of shape [{logits.shape[0]}] (one candidate "
            f"index per row), got {target.dtype} of shape {tuple(target.shape)}"
        )
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        bad = int(torch.nonzero((target < 0) | (target >= logits.shape[1]))[0, 0])
        raise ValueError(
            f"{where}: target[{bad}] = {int(target[bad])} is not a candidate index in "
            f"[0, {logits.shape[1]}); targets index the columns of logits"
        )


def _check_sampled(pos_logits: Tensor, neg_logits: Tensor, where: str) -> None:
    if pos_logits.dim() != 1 or neg_logits.dim() != 2 or neg_logits.shape[0] != len(pos_logits):
        raise ValueError(
            f"{where}: expected pos_logits [B] and neg_logits [B, N], got "
            f"{tuple(pos_logits.shape)} and {tuple(neg_logits.shape)}"
        )
    if neg_logits.shape[1] == 0:
        raise ValueError(f"{where}: neg_logits has no negatives (shape {tuple(neg_logits.shape)})")


def _log_softplus(x: Tensor) -> Tensor:
    """``log(softplus(x))`` without underflow: softplus(-1e4) is 0 in any float, its log is not."""
    linear = x < _LOG_SOFTPLUS_LINEAR_BELOW
    # Feed 0 to the unused branch so neither value nor gradient of log(0) is ever formed.
    safe = torch.where(linear, torch.zeros_like(x), x)
    return torch.where(linear, x, torch.log(F.softplus(safe)))


def _log_one_minus_softmax(logits: Tensor, target: Tensor) -> Tensor:
    """``log(1 - softmax(logits)[target])`` per row, as a masked logsumexp (seed 002)."""
    is_target = F.one_hot(target, logits.shape[1]).bool()
    others = logits.masked_fill(is_target, -math.inf)
    return torch.logsumexp(others, dim=1) - torch.logsumexp(logits, dim=1)


# --------------------------------------------------------------------------------------------
# Pointwise losses: None, NS, T-CE, R-CE, binary focal
# --------------------------------------------------------------------------------------------


def bce_with_logits(
    logits: Tensor, labels: Tensor, weights: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Binary cross-entropy ℓ(z, y) from logits — the loss of methods *None* and *NS*.

    ``ℓ(z, y) = y·softplus(−z) + (1 − y)·softplus(z)``, which is ``−y·log σ(z) − (1−y)·log(1−σ(z))``
    without forming σ(z) (paper §2, the LogLoss).

    *None* and *NS* are this one loss on different rows (method.md §3): *None* sees the labeled
    rows only; *NS* sees the labeled rows plus, for each, ``sampling_rate`` unlabeled items drawn
    from the items the user has not interacted with, labeled ``y = 0``. Building those rows is the
    data layer's job (``invlearn_ray.data``), not this function's.

    Args:
        logits: ``[B]`` scores f(u, i).
        labels: ``[B]`` targets in [0, 1] (bool or integer labels are cast to the logits' dtype).
        weights: optional ``[B]`` per-row weights, multiplied in before the reduction.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Returns:
        The reduced loss, or ``[B]`` per-row losses for ``reduction="none"``.
    """
    labels = _check_pointwise(logits, labels, "bce_with_logits")
    per_row = labels * F.softplus(-logits) + (1 - labels) * F.softplus(logits)
    return _reduce(per_row, weights, reduction, "bce_with_logits")


def drop_rate_schedule(step: int, max_drop: float, num_gradual: int) -> float:
    """T-CE drop rate at a training step: linear from 0 to ``max_drop`` over ``num_gradual`` steps.

    ``drop_rate(t) = max_drop · min(t / num_gradual, 1)`` (DenoisingRec, Wang et al. 2021, eq. 8).
    The released DenoisingRec code takes ``linspace(0, max_drop, num_gradual)[t]``, which reaches
    ``max_drop`` one step earlier (at ``t = num_gradual − 1``); the difference is one step.

    Args:
        step: optimizer steps taken so far (≥ 0).
        max_drop: the final drop rate, in [0, 1).
        num_gradual: steps over which the rate grows; 0 applies ``max_drop`` at once.

    Returns:
        The fraction of the batch to drop at this step.
    """
    where = "drop_rate_schedule"
    if step < 0:
        raise ValueError(f"{where}: step must be >= 0, got {step}")
    if not 0 <= max_drop < 1:
        raise ValueError(f"{where}: max_drop must be in [0, 1), got {max_drop!r}")
    if num_gradual < 0:
        raise ValueError(f"{where}: num_gradual must be >= 0, got {num_gradual}")
    if num_gradual == 0:
        return float(max_drop)
    return float(max_drop) * min(step / num_gradual, 1.0)


def truncation_keep_mask(logits: Tensor, labels: Tensor, drop_rate: float) -> Tensor:
    """Rows T-CE keeps: all but the ``⌊drop_rate · B⌋`` largest-loss *positive* rows.

    Negatives are never dropped (method.md §3). When the batch holds fewer positives than the drop
    count, every positive is dropped and no negative. Ties are broken by ``torch.topk``.

    Args:
        logits: ``[B]`` scores.
        labels: ``[B]`` labels; rows with label 1 are positives.
        drop_rate: fraction of the *batch* to drop, in [0, 1) (see ``drop_rate_schedule``).

    Returns:
        ``[B]`` bool mask, True for kept rows.
    """
    labels = _check_pointwise(logits, labels, "truncation_keep_mask")
    if not 0 <= drop_rate < 1:
        raise ValueError(f"truncation_keep_mask: drop_rate must be in [0, 1), got {drop_rate!r}")
    # The 1e-9 absorbs float error so that e.g. 0.29 · 100 drops 29 rows, not 28.
    num_drop = math.floor(drop_rate * logits.numel() + 1e-9)
    is_positive = labels == 1
    num_drop = min(num_drop, int(is_positive.sum()))
    keep = torch.ones_like(is_positive)
    if num_drop > 0:
        positive_loss = F.softplus(-logits.detach()).masked_fill(~is_positive, -math.inf)
        keep[torch.topk(positive_loss, num_drop).indices] = False
    return keep


def truncated_bce(
    logits: Tensor, labels: Tensor, drop_rate: float, reduction: str = "mean"
) -> Tensor:
    """T-CE (truncated cross-entropy, DenoisingRec): BCE without the largest-loss positives.

    ``L = mean_{rows kept} ℓ(z, y)``, where the rows dropped are the ``⌊drop_rate(t) · B⌋``
    positives with the largest ℓ(z, 1) (Wang et al. 2021, "Denoising Implicit Feedback for
    Recommendation", eq. 7; method.md §3). Applied to the NS training set (labeled rows plus sampled
    unlabeled rows with y = 0), so large-loss positives — likely false positives — stop pulling.

    Departure from the released DenoisingRec code: it sorts ``loss · label`` ascending and keeps the
    first ``int((1 − drop_rate) · B)`` rows. Negatives have key 0, so it too drops the largest-loss
    positives first; but it rounds the kept count down (dropping up to one row more, and e.g. 10
    rows instead of 9 for drop_rate 0.9, B = 10, from float error), and when the drop count exceeds
    the positives it drops arbitrary negatives. Here the drop count rounds down and is capped at the
    number of positives: negatives are never dropped.

    Args:
        logits: ``[B]`` scores.
        labels: ``[B]`` 0/1 labels.
        drop_rate: fraction of the batch to drop, in [0, 1).
        reduction: ``"mean"`` over the kept rows, ``"sum"`` over them, or ``"none"`` for ``[B]``
            per-row losses with the dropped rows set to 0.

    Returns:
        The truncated loss.
    """
    labels = _check_pointwise(logits, labels, "truncated_bce")
    keep = truncation_keep_mask(logits, labels, drop_rate)
    per_row = bce_with_logits(logits, labels, reduction="none")
    if reduction == "mean":
        return _reduce(per_row[keep], None, "mean", "truncated_bce")
    return _reduce(per_row * keep, None, reduction, "truncated_bce")


def reweighted_bce(logits: Tensor, labels: Tensor, beta: float, reduction: str = "mean") -> Tensor:
    """R-CE (reweighted cross-entropy, DenoisingRec): BCE weighted by the model's own confidence.

    ``L = mean( ω(z, y) · ℓ(z, y) )`` with the stop-gradient weight ``ω = σ(z)^β`` for y = 1 and
    ``ω = (1 − σ(z))^β`` for y = 0 (Wang et al. 2021, eq. 9; method.md §3): rows the model finds
    hard — likely noisy — count less. β = 0 is plain BCE. The weight is ``exp(β · logsigmoid(±z))``
    so that it is exactly 0, not NaN, at |z| = 1e4. Same formula as the released code, which
    computes ``pow(sigmoid(z), β)``.

    Args:
        logits: ``[B]`` scores.
        labels: ``[B]`` labels in [0, 1].
        beta: β ≥ 0, the sharpness of the reweighting.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Returns:
        The reweighted loss.
    """
    labels = _check_pointwise(logits, labels, "reweighted_bce")
    _check_non_negative(beta, "beta", "reweighted_bce")
    detached = logits.detach()
    weight = labels * torch.exp(beta * F.logsigmoid(detached)) + (1 - labels) * torch.exp(
        beta * F.logsigmoid(-detached)
    )
    per_row = bce_with_logits(logits, labels, reduction="none")
    return _reduce(per_row, weight, reduction, "reweighted_bce")


def focal_bce(
    logits: Tensor,
    labels: Tensor,
    gamma: float,
    weights: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Binary focal loss from logits (Lin et al. 2017, "Focal Loss for Dense Object Detection").

    ``ℓ_γ(z, y) = −y·(1 − σ(z))^γ·log σ(z) − (1 − y)·σ(z)^γ·log(1 − σ(z))``; γ = 0 is BCE. The
    modulating factors are ``exp(γ·logsigmoid(∓z))`` and the logs are softplus terms, so nothing
    underflows to ``0 · (−inf)``. The factor is differentiated through, as in Lin et al.

    Args:
        logits: ``[B]`` scores.
        labels: ``[B]`` labels in [0, 1].
        gamma: γ ≥ 0, the focusing parameter.
        weights: optional ``[B]`` per-row weights.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Returns:
        The focal loss.
    """
    labels = _check_pointwise(logits, labels, "focal_bce")
    _check_non_negative(gamma, "gamma", "focal_bce")
    positive_term = torch.exp(gamma * F.logsigmoid(-logits)) * F.softplus(-logits)
    negative_term = torch.exp(gamma * F.logsigmoid(logits)) * F.softplus(logits)
    per_row = labels * positive_term + (1 - labels) * negative_term
    return _reduce(per_row, weights, reduction, "focal_bce")


# --------------------------------------------------------------------------------------------
# Inverse Dual Loss (unlabeled rows)
# --------------------------------------------------------------------------------------------


class DualLossResult(NamedTuple):
    """What ``inverse_dual_loss`` returns: the loss and the detached per-row weights w¹, w⁰."""

    loss: Tensor
    pos_weight: Tensor
    neg_weight: Tensor


def idl_weights(logits: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """The Inverse Dual Loss weights (w¹, w⁰) of each unlabeled row, detached.

    Paper eq. 4 with l1 = ℓ(z, 1), l0 = ℓ(z, 0) (stop-gradient):
    ``w¹ = (l0/l1)/Z``, ``w⁰ = (l1/l0)/Z``, ``Z = l0/l1 + l1/l0``; that is
    ``w¹ = l0² / (l0² + l1²)`` and ``w⁰ = l1² / (l0² + l1²)``: the label with the *lower* loss gets
    the larger weight, and ``w¹ + w⁰ = 1``.

    Computed as ``w¹ = σ((2/T)·(log l0 − log l1))`` from log-losses (``log softplus(∓z)`` evaluated
    without underflow), so |z| = 1e4, where one loss is exactly 0 in float, gives the correct limit
    (w¹ = 1 for z → +∞) instead of 0/0. The released code instead divides with a 1e-9 guard,
    ``l0 / (l1 + 1e-9)``; the two agree to ~1e-9 wherever both losses exceed ~1e-4, and the guard is
    not needed here.

    ``temperature`` T generalizes the exponent, ``w¹ ∝ l0^(2/T)``: T = 1 is the paper; T = 2 gives
    ``l0 / (l0 + l1)``; T → ∞ gives ½, ½; T → 0 gives hard 0/1 labels. It is this project's
    extension (later work tunes it), not part of the paper.

    Args:
        logits: ``[B]`` scores of unlabeled rows.
        temperature: T > 0 (1.0 = paper).

    Returns:
        ``(pos_weight, neg_weight)``, each ``[B]``, detached.
    """
    _check_positive(temperature, "temperature", "idl_weights")
    detached = logits.detach()
    log_pos_loss = _log_softplus(-detached)  # log ℓ(z, 1)
    log_neg_loss = _log_softplus(detached)  # log ℓ(z, 0)
    gap = (2.0 / temperature) * (log_neg_loss - log_pos_loss)
    # Both from sigmoid (not 1 − w¹) so the smaller weight keeps its relative precision.
    return torch.sigmoid(gap), torch.sigmoid(-gap)


def inverse_dual_loss(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    weights: Tensor | None = None,
    reduction: str = "mean",
) -> DualLossResult:
    """IDL — the Inverse Dual Loss of unlabeled rows (Lin et al., WSDM'24, §3.1.2, eq. 4).

    ``L_dual = mean( w¹·ℓ(z, 1) + w⁰·ℓ(z, 0) )`` with the stop-gradient weights of
    ``idl_weights``: each unlabeled row is treated as possibly positive and possibly negative, and
    the label the model already finds easier (lower loss) is weighted more, so easy rows are
    annotated with their likely true label.

    Args:
        logits: ``[B]`` scores of unlabeled rows (no labels needed).
        temperature: T of ``idl_weights`` (1.0 = paper).
        weights: optional ``[B]`` per-row weights (e.g. a padding mask), multiplied in before the
            reduction.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Returns:
        ``DualLossResult(loss, pos_weight, neg_weight)``; the weights are for logging their
        distribution (paper Figures 4–5).
    """
    if not logits.is_floating_point():
        raise TypeError(f"inverse_dual_loss: logits must be floating, got {logits.dtype}")
    pos_weight, neg_weight = idl_weights(logits, temperature)
    per_row = pos_weight * F.softplus(-logits) + neg_weight * F.softplus(logits)
    loss = _reduce(per_row, weights, reduction, "inverse_dual_loss")
    return DualLossResult(loss, pos_weight, neg_weight)


def softmax_loss(
    pos_logits: Tensor,
    neg_logits: Tensor,
    tau: float,
    weights: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """SL — sampled softmax loss with temperature τ (BSL paper eq. 2; method.md §3).

    Per row (positive (u, i) with sampled negatives N_u):
    ``−f(u,i)/τ + log Σ_{j ∈ {i} ∪ N_u} exp(f(u,j)/τ)``, i.e. cross-entropy with the positive as
    class 0 of the ``1 + N`` candidates, computed with ``logsumexp``.

    Args:
        pos_logits: ``[B]`` scores of the positives.
        neg_logits: ``[B, N]`` scores of each row's sampled negatives.
        tau: τ > 0.
        weights: optional ``[B]`` per-row weights.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Returns:
        The softmax loss.
    """
    _check_sampled(pos_logits, neg_logits, "softmax_loss")
    _check_positive(tau, "tau", "softmax_loss")
    candidates = torch.cat([pos_logits.unsqueeze(1), neg_logits], dim=1) / tau
    per_row = torch.logsumexp(candidates, dim=1) - pos_logits / tau
    return _reduce(per_row, weights, reduction, "softmax_loss")


def _segment_log_mean_exp(values: Tensor, segment: Tensor, num_segments: int) -> Tensor:
    """``log mean exp(values)`` within each segment, with scatter ops (no loop over segments)."""
    shift = torch.full(
        (num_segments,), -math.inf, dtype=values.dtype, device=values.device
    ).scatter_reduce(0, segment, values.detach(), reduce="amax")
    # The shift is a constant of the result (logsumexp is shift-invariant): no gradient needed.
    summed = torch.zeros(num_segments, dtype=values.dtype, device=values.device).index_add(
        0, segment, torch.exp(values - shift[segment])
    )
    counts = torch.bincount(segment, minlength=num_segments).to(values.dtype)
    return shift + torch.log(summed) - torch.log(counts)


def bilateral_softmax_loss(
    pos_logits: Tensor,
    neg_logits: Tensor,
    users: Tensor,
    tau_pos: float,
    tau_neg: float,
    reduction: str = "mean",
) -> Tensor:
    """BSL — bilateral softmax loss (Wu et al., "BSL: Understanding and Improving Softmax Loss for
    Recommendation", ICDE'24; seed 003; method.md §3).

    Per user u of the batch, with P_u the user's rows in the batch (one positive each) and N_b the
    sampled negatives of row b:

    ``L_u = −τ1 · log mean_{b ∈ P_u} exp( (f(u,i_b) − τ2·log mean_{j ∈ N_b} exp(f(u,j)/τ2)) / τ1 )``

    and the loss is the mean of L_u over the users in the batch. The negative side is SL's
    Log-Expectation-Exp (a KL-DRO over negatives, robust to false negatives); BSL applies the same
    structure over the positives, so with small τ1 a positive whose term is low (high loss — likely
    a noisy positive) gets an exponentially small share of the user's gradient. Grouping is within
    the batch, by segment logsumexp over ``users`` (scatter ops, no Python loop).

    Relation to SL (``softmax_loss``), checked numerically in the tests: as τ1 → ∞,
    ``−τ1·log mean_b exp(x_b/τ1) → −mean_b x_b``, so with τ2 = τ each row contributes
    ``−f + τ·log mean_{N_b} exp(f_j/τ) = τ · (SL_row − log N − softplus(f/τ − logsumexp_{N_b}
    f_j/τ))``: BSL is SL scaled by τ, minus the constant ``log N`` (mean, not sum, over
    negatives) and minus the ``softplus`` term (the positive is *not* in the negative-side
    normalizer), averaged per user rather than per row (the same when each user holds one row).

    Departures from the released BSL code (github.com/junkangwu/BSL, ``utils/losses.py``, mode
    ``"multi"``): it computes, per row, ``−log mean_{rows of u} exp(f_i/τ1) +
    τ2·log mean_j exp(f_j/τ1)`` — τ1 is the temperature on *both* sides and its ``temperature2`` is
    a power on the negative term, not a temperature; the positive mean is taken outside the
    negative normalizer; and rows, not users, are averaged (a user with k rows counts k times).
    It equals this function divided by τ1 when τ2 = τ1, its power is 1, and each user holds one
    row. We follow method.md's formula, the paper's.

    Args:
        pos_logits: ``[B]`` scores of each row's positive.
        neg_logits: ``[B, N]`` scores of each row's sampled negatives.
        users: ``[B]`` integer user ids (rows of one user are grouped).
        tau_pos: τ1 > 0, the positive-side temperature.
        tau_neg: τ2 > 0, the negative-side temperature.
        reduction: ``"mean"`` over users, ``"sum"`` over users, or ``"none"`` for the per-user
            losses in the order of ``torch.unique(users)`` (ascending user id).

    Returns:
        The bilateral softmax loss.
    """
    where = "bilateral_softmax_loss"
    _check_sampled(pos_logits, neg_logits, where)
    _check_positive(tau_pos, "tau_pos", where)
    _check_positive(tau_neg, "tau_neg", where)
    if users.shape != pos_logits.shape or users.is_floating_point() or users.dtype == torch.bool:
        raise ValueError(
            f"{where}: users must be an integer tensor of shape {tuple(pos_logits.shape)}, "
            f"got {users.dtype} of shape {tuple(users.shape)}"
        )
    neg_log_mean_exp = torch.logsumexp(neg_logits / tau_neg, dim=1) - math.log(neg_logits.shape[1])
    row_term = (pos_logits - tau_neg * neg_log_mean_exp) / tau_pos
    unique_users, segment = torch.unique(users, return_inverse=True)
    per_user = -tau_pos * _segment_log_mean_exp(row_term, segment, len(unique_users))
    return _reduce(per_user, None, reduction, where)


# --------------------------------------------------------------------------------------------
# Explicit negative feedback over a candidate set (softmax models)
# --------------------------------------------------------------------------------------------


def eps_negative_ce(
    logits: Tensor,
    target: Tensor,
    weight: float | Tensor = -1.0,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> Tensor:
    """Negative-weight cross-entropy with ε-smoothing, for disliked ("unwanted") items (seed 000).

    Per row: ``w · (−log(p_t + ε))`` with ``p_t = softmax(logits)[target]`` and ``w < 0`` for a
    dislike, so minimizing it pushes p_t down. Without ε the loss is unbounded below and its
    gradient with respect to p_t, ``−w / p_t``, blows up as p_t → 0 (with respect to the logits it
    never decays, so the disliked logit is driven to −∞); ε bounds the loss by ``|w|·log(1/ε)``
    and the p_t-gradient by ``|w| / ε``, and makes the logit gradient vanish once p_t ≪ ε.
    ``log(p_t + ε)`` is ``logaddexp(log_softmax_t, log ε)`` — never the log of a probability.
    Gradient clipping, the seed's other remedy, belongs to the trainer.

    Args:
        logits: ``[B, C]`` scores of each row's candidate set.
        target: ``[B]`` int64 index of the disliked (or, with w > 0, liked) candidate.
        weight: w, a float or a ``[B]`` tensor (rows may mix likes, w > 0, and dislikes, w < 0).
        eps: ε ≥ 0 (0 reproduces the unsmoothed loss and its blow-up; tuned, method.md §3).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Returns:
        The weighted loss.
    """
    _check_candidates(logits, target, "eps_negative_ce")
    _check_non_negative(eps, "eps", "eps_negative_ce")
    log_p_target = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    log_eps = math.log(eps) if eps > 0 else -math.inf
    per_row = -torch.logaddexp(log_p_target, torch.full_like(log_p_target, log_eps))
    if isinstance(weight, Tensor):
        return _reduce(per_row, weight.to(per_row.dtype), reduction, "eps_negative_ce")
    return _reduce(weight * per_row, None, reduction, "eps_negative_ce")


def complement_nll(
    logits: Tensor, target: Tensor, weights: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Complement likelihood for a disliked item: ``−log(1 − p_t)`` (seed 002; method.md §3).

    ``−log(1 − p_t) = −( logsumexp_{k ≠ t} f_k − logsumexp_k f_k )``, a masked logsumexp — never
    ``log(1 − softmax)``, which is ``log(0)`` once p_t rounds to 1. Minimizing it maximizes the
    probability that the user's choice is *not* the disliked item: the stable alternative to
    negating the cross-entropy gradient, which diverges (seed 002). It is ≥ 0 and tends to 0 as
    p_t → 0, so a well-handled dislike stops contributing.

    Args:
        logits: ``[B, C]`` scores, C ≥ 2.
        target: ``[B]`` int64 index of the disliked candidate.
        weights: optional ``[B]`` per-row weights.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Returns:
        The complement negative log-likelihood.
    """
    _check_candidates(logits, target, "complement_nll")
    per_row = -_log_one_minus_softmax(logits, target)
    return _reduce(per_row, weights, reduction, "complement_nll")


def focal_softmax_loss(
    logits: Tensor,
    target: Tensor,
    gamma: float,
    weights: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Softmax focal loss for a positive candidate: ``−(1 − p_t)^γ · log p_t`` (seed 000).

    Lin et al. 2017 over a candidate set: γ = 0 is cross-entropy; γ > 0 down-weighs candidates the
    model already ranks confidently. ``(1 − p_t)^γ = exp(γ · log(1 − p_t))`` with the masked
    logsumexp of ``complement_nll`` and ``log p_t`` from ``log_softmax``, so both factors stay
    finite when p_t rounds to 0 or 1. The factor is differentiated through, as in Lin et al.

    Args:
        logits: ``[B, C]`` scores, C ≥ 2.
        target: ``[B]`` int64 index of the wanted candidate.
        gamma: γ ≥ 0.
        weights: optional ``[B]`` per-row weights (seed 000's w).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Returns:
        The focal loss.
    """
    _check_candidates(logits, target, "focal_softmax_loss")
    _check_non_negative(gamma, "gamma", "focal_softmax_loss")
    log_p_target = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    modulating = torch.exp(gamma * _log_one_minus_softmax(logits, target))
    per_row = -modulating * log_p_target
    return _reduce(per_row, weights, reduction, "focal_softmax_loss")
