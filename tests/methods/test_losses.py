"""Losses: agreement with independent references, the properties the method relies on, and
finite values and gradients at logits of ±1e4."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from invlearn_ray.methods import losses as L

EXTREME = 1e4


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits(n: int, seed: int = 0, scale: float = 3.0, dtype=torch.float64) -> torch.Tensor:
    return (torch.randn(n, generator=_generator(seed), dtype=dtype) * scale).requires_grad_()


def _labels(n: int, seed: int = 1) -> torch.Tensor:
    return (torch.rand(n, generator=_generator(seed)) < 0.6).float()


def _extreme_pointwise() -> tuple[torch.Tensor, torch.Tensor]:
    """Every sign combination of label and ±1e4 logit, plus ordinary values, in float32."""
    logits = torch.tensor([EXTREME, -EXTREME, EXTREME, -EXTREME, 0.0, 3.0, -3.0])
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    return logits.requires_grad_(), labels


def _extreme_candidates() -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate logits where the target is far above, far below, or level with the rest."""
    logits = torch.tensor(
        [
            [EXTREME, 0.0, 0.0, 0.0],
            [-EXTREME, 0.0, 0.0, 0.0],
            [0.0, EXTREME, -EXTREME, 0.0],
            [EXTREME, EXTREME, -EXTREME, -EXTREME],
            [1.0, 2.0, 3.0, 4.0],
        ]
    )
    target = torch.tensor([0, 0, 1, 2, 3])
    return logits.requires_grad_(), target


def _assert_finite_value_and_grad(loss: torch.Tensor, *inputs: torch.Tensor) -> None:
    assert torch.isfinite(loss).all(), loss
    grads = torch.autograd.grad(loss.sum(), inputs)
    for grad in grads:
        assert torch.isfinite(grad).all(), grad


# ----------------------------------------------------------------------------------------------
# Numerics at ±1e4: every loss
# ----------------------------------------------------------------------------------------------

POINTWISE_AT_EXTREMES = {
    "bce": lambda z, y: L.bce_with_logits(z, y),
    "truncated_bce": lambda z, y: L.truncated_bce(z, y, drop_rate=0.3),
    "reweighted_bce": lambda z, y: L.reweighted_bce(z, y, beta=0.25),
    "focal_bce_gamma_2": lambda z, y: L.focal_bce(z, y, gamma=2.0),
    "focal_bce_gamma_half": lambda z, y: L.focal_bce(z, y, gamma=0.5),
    "inverse_dual": lambda z, y: L.inverse_dual_loss(z).loss,
    "inverse_dual_temperature_3": lambda z, y: L.inverse_dual_loss(z, temperature=3.0).loss,
}


@pytest.mark.parametrize("name", sorted(POINTWISE_AT_EXTREMES))
def test_pointwise_loss_is_finite_with_finite_gradient_at_extreme_logits(name):
    logits, labels = _extreme_pointwise()
    _assert_finite_value_and_grad(POINTWISE_AT_EXTREMES[name](logits, labels), logits)


CANDIDATE_AT_EXTREMES = {
    "eps_negative_ce": lambda z, t: L.eps_negative_ce(z, t),
    "eps_negative_ce_positive_weight": lambda z, t: L.eps_negative_ce(z, t, weight=1.0),
    "complement_nll": lambda z, t: L.complement_nll(z, t),
    "focal_softmax_gamma_2": lambda z, t: L.focal_softmax_loss(z, t, gamma=2.0),
    "focal_softmax_gamma_half": lambda z, t: L.focal_softmax_loss(z, t, gamma=0.5),
}


@pytest.mark.parametrize("name", sorted(CANDIDATE_AT_EXTREMES))
def test_candidate_loss_is_finite_with_finite_gradient_at_extreme_logits(name):
    logits, target = _extreme_candidates()
    _assert_finite_value_and_grad(CANDIDATE_AT_EXTREMES[name](logits, target), logits)


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_softmax_losses_are_finite_with_finite_gradient_at_extreme_logits(tau):
    pos = torch.tensor([EXTREME, -EXTREME, 0.0, EXTREME], requires_grad=True)
    neg = torch.tensor(
        [[-EXTREME, EXTREME], [EXTREME, EXTREME], [-EXTREME, -EXTREME], [0.0, 1.0]],
        requires_grad=True,
    )
    users = torch.tensor([0, 0, 1, 2])
    _assert_finite_value_and_grad(L.softmax_loss(pos, neg, tau), pos, neg)
    bsl = L.bilateral_softmax_loss(pos, neg, users, tau_pos=tau, tau_neg=tau)
    _assert_finite_value_and_grad(bsl, pos, neg)


# ----------------------------------------------------------------------------------------------
# BCE (None / NS), reductions, weights
# ----------------------------------------------------------------------------------------------


def test_bce_matches_torch_reference():
    logits, labels = _logits(200), _labels(200)
    expected = F.binary_cross_entropy_with_logits(logits, labels.double())
    torch.testing.assert_close(L.bce_with_logits(logits, labels), expected)


def test_bce_per_row_weights_multiply_before_the_mean():
    logits, labels = _logits(50), _labels(50)
    weights = torch.rand(50, generator=_generator(3), dtype=torch.float64)
    per_row = F.binary_cross_entropy_with_logits(logits, labels.double(), reduction="none")
    torch.testing.assert_close(
        L.bce_with_logits(logits, labels, weights=weights), (weights * per_row).mean()
    )
    torch.testing.assert_close(
        L.bce_with_logits(logits, labels, weights=weights, reduction="sum"),
        (weights * per_row).sum(),
    )


def test_bce_accepts_bool_labels():
    logits = _logits(10)
    labels = torch.arange(10) % 2 == 0
    torch.testing.assert_close(
        L.bce_with_logits(logits, labels), L.bce_with_logits(logits, labels.double())
    )


def test_bce_runs_under_vmap_over_stacked_logits():
    stacked = torch.randn(3, 20, generator=_generator(), dtype=torch.float64)
    labels = _labels(20).double()
    batched = torch.func.vmap(lambda z: L.bce_with_logits(z, labels))(stacked)
    expected = torch.stack([L.bce_with_logits(z, labels) for z in stacked])
    torch.testing.assert_close(batched, expected)


def test_inverse_dual_loss_runs_under_vmap_over_stacked_logits():
    stacked = torch.randn(3, 20, generator=_generator(), dtype=torch.float64)
    batched = torch.func.vmap(lambda z: L.inverse_dual_loss(z).loss)(stacked)
    expected = torch.stack([L.inverse_dual_loss(z).loss for z in stacked])
    torch.testing.assert_close(batched, expected)


def test_mismatched_label_shape_is_rejected_with_both_shapes():
    with pytest.raises(ValueError, match=r"\(5,\).*\(4,\)"):
        L.bce_with_logits(torch.zeros(5), torch.zeros(4))


def test_unknown_reduction_is_rejected_with_valid_options():
    with pytest.raises(ValueError, match="'mean', 'sum', 'none'"):
        L.bce_with_logits(torch.zeros(3), torch.zeros(3), reduction="avg")


def test_mean_over_empty_batch_is_rejected_but_sum_is_zero():
    empty = torch.zeros(0)
    with pytest.raises(ValueError, match="empty batch"):
        L.bce_with_logits(empty, empty)
    assert L.bce_with_logits(empty, empty, reduction="sum").item() == 0.0


# ----------------------------------------------------------------------------------------------
# T-CE
# ----------------------------------------------------------------------------------------------


def test_drop_rate_grows_linearly_then_stays_at_max():
    rates = [L.drop_rate_schedule(step, max_drop=0.2, num_gradual=10) for step in range(15)]
    assert rates[0] == 0.0
    assert rates[5] == pytest.approx(0.1)
    assert rates[10:] == [pytest.approx(0.2)] * 5
    assert all(b >= a for a, b in zip(rates, rates[1:], strict=False))


def test_drop_rate_with_no_gradual_steps_is_max_at_once():
    assert L.drop_rate_schedule(0, max_drop=0.3, num_gradual=0) == 0.3


@pytest.mark.parametrize("max_drop", [-0.1, 1.0])
def test_drop_rate_outside_unit_interval_is_rejected(max_drop):
    with pytest.raises(ValueError, match="max_drop"):
        L.drop_rate_schedule(0, max_drop=max_drop, num_gradual=5)


def test_truncated_bce_drops_largest_loss_positives_only():
    logits = torch.tensor(
        [-5.0, -4.0, 2.0, 3.0, 4.0, 5.0, 6.0, -6.0, -1.0, -2.0], requires_grad=True
    )
    labels = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    keep = L.truncation_keep_mask(logits, labels, drop_rate=0.2)
    # 2 of 10 rows go: the positives scored -5 and -4. The negative scored 6 has the largest loss
    # of the batch and the one scored -6 the largest loss *as a positive*; neither is dropped.
    assert keep.tolist() == [False, False] + [True] * 8
    per_row = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    torch.testing.assert_close(L.truncated_bce(logits, labels, 0.2), per_row[2:].mean())


def test_truncated_bce_never_drops_negatives_when_positives_run_out():
    logits = torch.tensor([-3.0, 5.0, 4.0, 3.0, 2.0])
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
    keep = L.truncation_keep_mask(logits, labels, drop_rate=0.6)  # 3 rows asked, 1 positive
    assert keep.tolist() == [False, True, True, True, True]


def test_truncated_bce_drop_count_is_robust_to_float_error():
    logits, labels = torch.zeros(100), torch.ones(100)
    assert int((~L.truncation_keep_mask(logits, labels, drop_rate=0.29)).sum()) == 29


def test_truncated_bce_with_zero_drop_rate_is_bce():
    logits, labels = _logits(64), _labels(64)
    torch.testing.assert_close(
        L.truncated_bce(logits, labels, 0.0), L.bce_with_logits(logits, labels)
    )


def test_truncated_bce_gives_no_gradient_to_dropped_rows():
    logits = torch.tensor([-6.0, 1.0, 2.0, -1.0], requires_grad=True)
    labels = torch.tensor([1.0, 1.0, 1.0, 0.0])
    (grad,) = torch.autograd.grad(L.truncated_bce(logits, labels, 0.25), logits)
    assert grad[0] == 0 and (grad[1:] != 0).all()


# ----------------------------------------------------------------------------------------------
# R-CE
# ----------------------------------------------------------------------------------------------


def test_reweighted_bce_matches_released_denoisingrec_formula():
    logits, labels = _logits(100), _labels(100).double()
    beta = 0.25
    prob = torch.sigmoid(logits).detach()
    weight = prob.pow(beta) * labels + (1 - prob).pow(beta) * (1 - labels)
    per_row = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    torch.testing.assert_close(L.reweighted_bce(logits, labels, beta), (weight * per_row).mean())


def test_reweighted_bce_weight_is_not_differentiated():
    logits, labels = _logits(30), _labels(30).double()
    (grad,) = torch.autograd.grad(L.reweighted_bce(logits, labels, 0.5), logits)
    prob = torch.sigmoid(logits).detach()
    weight = prob.pow(0.5) * labels + (1 - prob).pow(0.5) * (1 - labels)
    torch.testing.assert_close(grad, weight * (prob - labels) / 30)


def test_reweighted_bce_with_zero_beta_is_bce():
    logits, labels = _logits(40), _labels(40)
    torch.testing.assert_close(
        L.reweighted_bce(logits, labels, 0.0), L.bce_with_logits(logits, labels)
    )


def test_reweighted_bce_down_weights_hard_positives():
    logits = torch.tensor([-4.0, 4.0], requires_grad=True)
    labels = torch.tensor([1.0, 1.0])
    per_row = L.reweighted_bce(logits, labels, beta=1.0, reduction="none")
    plain = L.bce_with_logits(logits, labels, reduction="none")
    ratio = per_row / plain
    assert ratio[0] < 0.05 and ratio[1] > 0.95


# ----------------------------------------------------------------------------------------------
# IDL
# ----------------------------------------------------------------------------------------------


def test_idl_weights_sum_to_one():
    logits = torch.cat([_logits(500, scale=10.0).detach(), torch.tensor([EXTREME, -EXTREME])])
    pos_weight, neg_weight = L.idl_weights(logits.float())
    torch.testing.assert_close(pos_weight + neg_weight, torch.ones(502))


def test_idl_weighs_the_lower_loss_label_more():
    logits = _logits(400, scale=5.0).detach()
    pos_weight, neg_weight = L.idl_weights(logits)
    pos_loss, neg_loss = F.softplus(-logits), F.softplus(logits)
    lower_is_positive = pos_loss < neg_loss
    assert (pos_weight[lower_is_positive] > 0.5).all()
    assert (neg_weight[~lower_is_positive & (logits != 0)] > 0.5).all()
    assert L.idl_weights(torch.zeros(1))[0].item() == 0.5


def test_idl_weights_match_paper_equation_four():
    logits = _logits(300, scale=4.0).detach()
    l1, l0 = F.softplus(-logits), F.softplus(logits)
    normalizer = l0 / l1 + l1 / l0
    pos_weight, neg_weight = L.idl_weights(logits)
    torch.testing.assert_close(pos_weight, (l0 / l1) / normalizer)
    torch.testing.assert_close(neg_weight, (l1 / l0) / normalizer)


def test_idl_weights_match_released_code_with_its_guard():
    logits = _logits(300, scale=4.0).detach().float()
    l1, l0 = F.softplus(-logits), F.softplus(logits)
    released_pos = l0 / (l1 + 1e-9)
    released_neg = l1 / (l0 + 1e-9)
    released_sum = released_pos + released_neg
    pos_weight, neg_weight = L.idl_weights(logits)
    torch.testing.assert_close(pos_weight, released_pos / released_sum, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(neg_weight, released_neg / released_sum, rtol=1e-5, atol=1e-6)


def test_idl_weights_reach_the_exact_limit_where_one_loss_underflows():
    # In float32 softplus(-1e4) is exactly 0, so eq. 4 read literally is inf/inf = NaN there.
    logits = torch.tensor([EXTREME, -EXTREME, 150.0, -150.0])
    assert F.softplus(-logits[0]).item() == 0.0
    pos_weight, neg_weight = L.idl_weights(logits)
    assert pos_weight.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert neg_weight.tolist() == [0.0, 1.0, 0.0, 1.0]


def test_idl_temperature_two_gives_linear_loss_ratio():
    logits = _logits(100).detach()
    l1, l0 = F.softplus(-logits), F.softplus(logits)
    pos_weight, _ = L.idl_weights(logits, temperature=2.0)
    torch.testing.assert_close(pos_weight, l0 / (l0 + l1))


def test_idl_large_temperature_flattens_weights_to_one_half():
    pos_weight, _ = L.idl_weights(_logits(100).detach(), temperature=1e6)
    torch.testing.assert_close(pos_weight, torch.full_like(pos_weight, 0.5), atol=1e-4, rtol=0)


def test_idl_loss_is_weighted_sum_with_stop_gradient_weights():
    logits = _logits(64)
    result = L.inverse_dual_loss(logits)
    w1, w0 = result.pos_weight, result.neg_weight
    assert not w1.requires_grad and not w0.requires_grad
    expected = (w1 * F.softplus(-logits) + w0 * F.softplus(logits)).mean()
    torch.testing.assert_close(result.loss, expected)
    (grad,) = torch.autograd.grad(result.loss, logits)
    prob = torch.sigmoid(logits).detach()
    torch.testing.assert_close(grad, (w0 * prob - w1 * (1 - prob)) / 64)


def test_idl_gradient_pushes_each_row_toward_its_lower_loss_label():
    logits = torch.tensor([2.0, -2.0], requires_grad=True)
    (grad,) = torch.autograd.grad(L.inverse_dual_loss(logits).loss, logits)
    assert grad[0] < 0 < grad[1]  # descent raises the positive-leaning logit, lowers the other


def test_idl_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        L.inverse_dual_loss(torch.zeros(3), temperature=0.0)


# ----------------------------------------------------------------------------------------------
# SL and BSL
# ----------------------------------------------------------------------------------------------


def _sampled(batch: int, negatives: int, seed: int = 0):
    gen = _generator(seed)
    pos = torch.randn(batch, generator=gen, dtype=torch.float64).requires_grad_()
    neg = torch.randn(batch, negatives, generator=gen, dtype=torch.float64).requires_grad_()
    return pos, neg


@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_softmax_loss_is_cross_entropy_with_positive_as_class_zero(tau):
    pos, neg = _sampled(32, 7)
    candidates = torch.cat([pos.unsqueeze(1), neg], dim=1) / tau
    expected = F.cross_entropy(candidates, torch.zeros(32, dtype=torch.int64))
    torch.testing.assert_close(L.softmax_loss(pos, neg, tau), expected)


def _bsl_reference(pos, neg, users, tau_pos, tau_neg) -> torch.Tensor:
    """BSL by its formula, one user at a time in plain Python loops (independent of scatter)."""
    losses = []
    for user in sorted(set(users.tolist())):
        terms = []
        for b in range(len(users)):
            if users[b].item() != user:
                continue
            neg_mean = sum(math.exp(v / tau_neg) for v in neg[b].tolist()) / neg.shape[1]
            terms.append(math.exp((pos[b].item() - tau_neg * math.log(neg_mean)) / tau_pos))
        losses.append(-tau_pos * math.log(sum(terms) / len(terms)))
    return torch.tensor(sum(losses) / len(losses), dtype=torch.float64)


@pytest.mark.parametrize(("tau_pos", "tau_neg"), [(0.2, 0.2), (0.15, 0.17), (1.0, 0.5)])
def test_bsl_matches_per_user_reference_with_repeated_users(tau_pos, tau_neg):
    pos, neg = _sampled(12, 5, seed=4)
    users = torch.tensor([3, 1, 3, 3, 7, 1, 9, 7, 3, 2, 2, 1])
    loss = L.bilateral_softmax_loss(pos, neg, users, tau_pos, tau_neg)
    torch.testing.assert_close(loss, _bsl_reference(pos, neg, users, tau_pos, tau_neg))


def test_bsl_per_user_losses_come_in_ascending_user_order():
    pos, neg = _sampled(4, 3)
    users = torch.tensor([5, 2, 5, 9])
    per_user = L.bilateral_softmax_loss(pos, neg, users, 0.3, 0.3, reduction="none")
    assert per_user.shape == (3,)
    only_user_two = L.bilateral_softmax_loss(pos[1:2], neg[1:2], users[1:2], 0.3, 0.3)
    torch.testing.assert_close(per_user[0], only_user_two)


def _bsl_large_tau_pos_limit(pos, neg, users, tau_neg) -> torch.Tensor:
    """τ1 → ∞: per user, the mean over its rows of −f + τ2·log mean exp(f_neg/τ2)."""
    row = -pos + tau_neg * (torch.logsumexp(neg / tau_neg, dim=1) - math.log(neg.shape[1]))
    per_user = [row[users == u].mean() for u in torch.unique(users)]
    return torch.stack(per_user).mean()


def test_bsl_tends_to_its_softmax_limit_as_tau_pos_grows():
    pos, neg = _sampled(20, 6, seed=2)
    users = torch.arange(20) % 6
    limit = _bsl_large_tau_pos_limit(pos, neg, users, tau_neg=0.5).detach()
    gaps = [
        abs(L.bilateral_softmax_loss(pos, neg, users, tau_pos, 0.5).item() - limit.item())
        for tau_pos in (0.5, 5.0, 50.0, 500.0, 5000.0)
    ]
    assert all(b < a for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[-1] < 1e-3 * gaps[0]


def test_bsl_at_large_tau_pos_is_softmax_loss_up_to_stated_constants():
    # One row per user: BSL(τ1 → ∞, τ2 = τ) = τ · mean(SL_row − log N − softplus(f/τ − lse_N)).
    tau, negatives = 0.4, 6
    pos, neg = _sampled(16, negatives, seed=5)
    users = torch.arange(16)
    sl_rows = L.softmax_loss(pos, neg, tau, reduction="none")
    correction = math.log(negatives) + F.softplus(pos / tau - torch.logsumexp(neg / tau, dim=1))
    expected = tau * (sl_rows - correction).mean()
    bsl = L.bilateral_softmax_loss(pos, neg, users, tau_pos=1e7, tau_neg=tau)
    torch.testing.assert_close(bsl, expected, rtol=1e-5, atol=1e-5)


def test_bsl_small_tau_pos_down_weights_high_loss_positives():
    pos = torch.tensor([3.0, -3.0], dtype=torch.float64, requires_grad=True)
    neg = torch.zeros(2, 4, dtype=torch.float64)
    users = torch.tensor([0, 0])
    (grad_small,) = torch.autograd.grad(L.bilateral_softmax_loss(pos, neg, users, 0.5, 1.0), pos)
    (grad_large,) = torch.autograd.grad(L.bilateral_softmax_loss(pos, neg, users, 1e4, 1.0), pos)
    # τ1 large: each positive gets an equal share; τ1 small: the hard (likely noisy) one ~none.
    expected_large = torch.tensor([-0.5, -0.5], dtype=torch.float64)
    torch.testing.assert_close(grad_large, expected_large, atol=1e-3, rtol=0)
    assert grad_small[1].abs() < 1e-4 * grad_small[0].abs()


def test_bsl_rejects_float_user_ids():
    pos, neg = _sampled(3, 2)
    with pytest.raises(ValueError, match="users must be an integer tensor"):
        L.bilateral_softmax_loss(pos, neg, torch.zeros(3), 0.2, 0.2)


def test_softmax_loss_rejects_negatives_of_wrong_batch_size():
    with pytest.raises(ValueError, match=r"\[B\].*\[B, N\]"):
        L.softmax_loss(torch.zeros(4), torch.zeros(3, 2), 1.0)


# ----------------------------------------------------------------------------------------------
# Explicit negative feedback
# ----------------------------------------------------------------------------------------------


def _candidates(batch: int = 16, count: int = 5, seed: int = 0):
    gen = _generator(seed)
    logits = (torch.randn(batch, count, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    target = torch.randint(0, count, (batch,), generator=gen)
    return logits, target


def test_eps_negative_ce_matches_smoothed_log_probability():
    logits, target = _candidates()
    p_target = torch.softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    expected = (-1.0 * -torch.log(p_target + 1e-3)).mean()
    torch.testing.assert_close(L.eps_negative_ce(logits, target, weight=-1.0, eps=1e-3), expected)


def test_eps_negative_ce_takes_per_row_weights():
    logits, target = _candidates()
    weight = torch.where(torch.arange(16) % 2 == 0, 1.0, -0.5).double()
    per_row = L.eps_negative_ce(logits, target, weight=1.0, reduction="none")
    torch.testing.assert_close(
        L.eps_negative_ce(logits, target, weight=weight), (weight * per_row).mean()
    )


def test_eps_negative_ce_gradient_in_probability_blows_up_without_eps():
    # A model that outputs probabilities p: logits = log p. d loss / d p_t = -w (1-p_t) / (p_t + ε).
    p_target = 1e-30
    probs = torch.tensor([[p_target, 0.5, 0.5 - p_target]], dtype=torch.float64)
    target = torch.tensor([0])

    def gradient_wrt_probability(eps: float) -> float:
        leaf = probs.clone().requires_grad_()
        loss = L.eps_negative_ce(leaf.log(), target, weight=-1.0, eps=eps)
        return torch.autograd.grad(loss, leaf)[0][0, 0].abs().item()

    assert gradient_wrt_probability(0.0) == pytest.approx((1 - p_target) / p_target, rel=1e-9)
    bounded = gradient_wrt_probability(1e-6)
    assert bounded == pytest.approx((1 - p_target) / (p_target + 1e-6), rel=1e-9)
    assert bounded < 1e-23 * gradient_wrt_probability(0.0)


def test_eps_negative_ce_without_eps_drives_the_disliked_logit_without_end():
    def descend(eps: float) -> tuple[float, float]:
        logits = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
        target = torch.tensor([0])
        for _ in range(300):
            loss = L.eps_negative_ce(logits, target, weight=-1.0, eps=eps)
            (grad,) = torch.autograd.grad(loss, logits)
            logits = (logits - 1.0 * grad).detach().requires_grad_()
        return loss.item(), grad.abs().max().item()

    loss_plain, grad_plain = descend(0.0)
    loss_smoothed, grad_smoothed = descend(1e-3)
    # ε = 0: the loss keeps falling (unbounded below) and the gradient never decays.
    assert loss_plain < -250 and grad_plain > 0.5
    # ε > 0: the loss is bounded below by |w|·log ε and the gradient fades (~ p_t / ε).
    assert loss_smoothed >= math.log(1e-3) and grad_smoothed < 0.01 * grad_plain


def test_eps_negative_ce_rejects_negative_eps():
    logits, target = _candidates()
    with pytest.raises(ValueError, match="eps"):
        L.eps_negative_ce(logits, target, eps=-1e-6)


def test_complement_nll_matches_log_one_minus_softmax_where_stable():
    logits, target = _candidates(64, 6)
    p_target = torch.softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    expected = -torch.log1p(-p_target).mean()
    torch.testing.assert_close(L.complement_nll(logits, target), expected)


def test_complement_nll_stays_finite_where_log_one_minus_softmax_is_not():
    logits = torch.tensor([[1e4, 0.0, 0.0]], requires_grad=True)
    target = torch.tensor([0])
    naive = -torch.log1p(-torch.softmax(logits, dim=1)[0, 0])
    assert torch.isinf(naive)
    loss = L.complement_nll(logits, target)
    assert loss.item() == pytest.approx(1e4 - math.log(2), rel=1e-6)
    (grad,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(grad, torch.tensor([[1.0, -0.5, -0.5]]))


def test_complement_nll_vanishes_for_an_already_unlikely_item():
    logits = torch.tensor([[-30.0, 0.0, 0.0]], dtype=torch.float64)
    assert L.complement_nll(logits, torch.tensor([0])).item() < 1e-12


def test_complement_nll_rejects_out_of_range_target_with_row():
    with pytest.raises(ValueError, match=r"target\[1\] = 5"):
        L.complement_nll(torch.zeros(2, 3), torch.tensor([0, 5]))


def test_candidate_losses_reject_a_single_candidate():
    with pytest.raises(ValueError, match="at least 2 candidates"):
        L.complement_nll(torch.zeros(2, 1), torch.tensor([0, 0]))


def test_focal_softmax_with_zero_gamma_is_cross_entropy():
    logits, target = _candidates()
    torch.testing.assert_close(
        L.focal_softmax_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target)
    )


def test_focal_softmax_matches_naive_formula_where_stable():
    logits, target = _candidates(32, 4)
    p_target = torch.softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    expected = (-((1 - p_target) ** 2) * torch.log(p_target)).mean()
    torch.testing.assert_close(L.focal_softmax_loss(logits, target, gamma=2.0), expected)


def test_focal_bce_with_zero_gamma_is_bce():
    logits, labels = _logits(50), _labels(50)
    torch.testing.assert_close(
        L.focal_bce(logits, labels, gamma=0.0), L.bce_with_logits(logits, labels)
    )


def test_focal_bce_matches_naive_formula_where_stable():
    logits, labels = _logits(80), _labels(80).double()
    prob = torch.sigmoid(logits)
    expected = -(
        labels * (1 - prob) ** 2 * torch.log(prob) + (1 - labels) * prob**2 * torch.log(1 - prob)
    ).mean()
    torch.testing.assert_close(L.focal_bce(logits, labels, gamma=2.0), expected)
