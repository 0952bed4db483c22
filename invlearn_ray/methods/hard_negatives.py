"""Hard-negative selection baselines: DNS and SRNS (paper Table 2; method.md §3).

Both pick, for each training row, one negative among M candidate items that the data layer drew
uniformly from the items the user has not interacted with. Because the candidates are i.i.d.
uniform, their order carries no information, so taking the *first* of equally scored candidates
(``argmax``) is itself an unbiased tie-break and no random generator is needed here.

* **DNS** (Zhang et al., "Optimizing Top-N Collaborative Filtering via Dynamic Negative Item
  Sampling", SIGIR 2013): the highest-scored candidate.
* **SRNS** (Ding et al., "Simplify and Robustify Negative Sampling for Implicit Collaborative
  Filtering", NeurIPS 2020): false negatives (unobserved positives) keep a high score *steadily*,
  true hard negatives see their score fluctuate while the model learns; so prefer candidates that
  are both high-scored and high in score standard deviation over recent epochs. ``ScoreHistory``
  keeps that record; ``srns_select`` applies the rule.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_candidate_logits(candidate_logits: Tensor, where: str) -> None:
    if candidate_logits.dim() != 2 or candidate_logits.shape[1] == 0:
        raise ValueError(
            f"{where}: candidate_logits must have shape [batch, candidates] with at least one "
            f"candidate, got {tuple(candidate_logits.shape)}"
        )


def dns_select(candidate_logits: Tensor) -> Tensor:
    """DNS: index of the highest-scored candidate of each row.

    Args:
        candidate_logits: ``[B, M]`` scores f(u, j) of M uniformly drawn candidates per row.

    Returns:
        ``[B]`` int64 indices into the candidate axis.
    """
    _check_candidate_logits(candidate_logits, "dns_select")
    return candidate_logits.argmax(dim=1)


def select_candidates(candidates: Tensor, index: Tensor) -> Tensor:
    """Pick one entry per row of ``candidates [B, M]`` (item ids or logits) at ``index [B]``."""
    if candidates.dim() != 2 or index.shape != candidates.shape[:1]:
        raise ValueError(
            f"select_candidates: expected candidates [B, M] and index [B], got "
            f"{tuple(candidates.shape)} and {tuple(index.shape)}"
        )
    return candidates.gather(1, index.unsqueeze(1)).squeeze(1)


def srns_likelihood(candidate_logits: Tensor, pos_logits: Tensor | None = None) -> Tensor:
    """SRNS's score of a candidate: the model's belief that it is a positive, in (0, 1).

    With the row's positive (pairwise training, as in SRNS): ``σ(f(u,j) − f(u,i))``, the
    probability that candidate j outranks the positive i (SRNS's P_pos; the released code's
    ``1 / (1 + exp(s_pos − s_neg))``). Without it (pointwise BCE training): ``σ(f(u,j))``.

    Args:
        candidate_logits: ``[B, M]`` candidate scores.
        pos_logits: optional ``[B]`` scores of each row's positive.

    Returns:
        ``[B, M]`` likelihoods; record these in ``ScoreHistory``.
    """
    _check_candidate_logits(candidate_logits, "srns_likelihood")
    if pos_logits is None:
        return torch.sigmoid(candidate_logits)
    if pos_logits.shape != candidate_logits.shape[:1]:
        raise ValueError(
            f"srns_likelihood: pos_logits must have shape [{candidate_logits.shape[0]}], "
            f"got {tuple(pos_logits.shape)}"
        )
    return torch.sigmoid(candidate_logits - pos_logits.unsqueeze(1))


def srns_alpha_schedule(epoch: int, alpha: float, warmup_epochs: float) -> float:
    """SRNS's variance weight at an epoch: ``α_t = α · min(1, epoch / warmup_epochs)``.

    Early in training the score history says little, so the std term is phased in (released code,
    ``args.alpha * min(1, epoch / args.warmup)``). ``warmup_epochs = 0`` applies α at once.
    """
    if epoch < 0 or alpha < 0 or warmup_epochs < 0:
        raise ValueError(
            "srns_alpha_schedule: epoch, alpha and warmup_epochs must be >= 0, got "
            f"{epoch}, {alpha}, {warmup_epochs}"
        )
    if warmup_epochs == 0:
        return float(alpha)
    return float(alpha) * min(1.0, epoch / warmup_epochs)


class ScoreHistory:
    """Ring buffer of the last ``window`` recorded scores of each row's M candidates.

    One slot per (training row, candidate position): row r's candidate pool is fixed, so slot j
    always holds the same item and its scores over recent epochs describe how the model's view of
    that item moves. Record a row once per epoch (when its batch is trained), so the window spans
    ``window`` epochs (SRNS and its released code use 5).

    Args:
        num_rows: number of training rows tracked.
        num_candidates: M, candidates per row.
        window: T, epochs of history kept (≥ 2 for a variance).
        dtype: storage dtype.
        device: storage device.
    """

    def __init__(
        self,
        num_rows: int,
        num_candidates: int,
        window: int = 5,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if num_rows < 1 or num_candidates < 1 or window < 2:
            raise ValueError(
                "ScoreHistory: need num_rows >= 1, num_candidates >= 1 and window >= 2 (a "
                f"variance needs two records), got {num_rows}, {num_candidates}, {window}"
            )
        self.window = window
        self.scores = torch.zeros(num_rows, num_candidates, window, dtype=dtype, device=device)
        self.counts = torch.zeros(num_rows, dtype=torch.int64, device=device)
        self._next_slot = torch.zeros(num_rows, dtype=torch.int64, device=device)

    @property
    def num_rows(self) -> int:
        return self.scores.shape[0]

    @property
    def num_candidates(self) -> int:
        return self.scores.shape[1]

    def _check_rows(self, row_index: Tensor, where: str) -> None:
        if row_index.dim() != 1 or row_index.dtype != torch.int64:
            raise ValueError(
                f"ScoreHistory.{where}: row_index must be a 1-D int64 tensor, got "
                f"{row_index.dtype} of shape {tuple(row_index.shape)}"
            )
        if row_index.numel() and (
            int(row_index.min()) < 0 or int(row_index.max()) >= self.num_rows
        ):
            bad = int(torch.nonzero((row_index < 0) | (row_index >= self.num_rows))[0, 0])
            raise IndexError(
                f"ScoreHistory.{where}: row_index[{bad}] = {int(row_index[bad])} is outside "
                f"[0, {self.num_rows}); the history was built for {self.num_rows} rows"
            )

    def update(self, row_index: Tensor, scores: Tensor) -> None:
        """Record one new score per candidate for each row in ``row_index`` (oldest dropped).

        Args:
            row_index: ``[B]`` distinct int64 training-row indices.
            scores: ``[B, M]`` scores to record (e.g. ``srns_likelihood``), detached here.
        """
        self._check_rows(row_index, "update")
        if scores.shape != (len(row_index), self.num_candidates):
            raise ValueError(
                f"ScoreHistory.update: scores must have shape [{len(row_index)}, "
                f"{self.num_candidates}], got {tuple(scores.shape)}"
            )
        if len(torch.unique(row_index)) != len(row_index):
            raise ValueError(
                "ScoreHistory.update: row_index repeats a row; record each row at most once "
                "per update (once per epoch)"
            )
        slot = self._next_slot[row_index]
        self.scores[row_index, :, slot] = scores.detach().to(self.scores.dtype)
        self._next_slot[row_index] = (slot + 1) % self.window
        self.counts[row_index] = torch.clamp(self.counts[row_index] + 1, max=self.window)

    def variance(self, row_index: Tensor) -> Tensor:
        """Population variance of each candidate's recorded scores; 0 with fewer than 2 records.

        Args:
            row_index: ``[B]`` int64 training-row indices.

        Returns:
            ``[B, M]`` variances.
        """
        self._check_rows(row_index, "variance")
        history = self.scores[row_index]  # [B, M, T]
        counts = self.counts[row_index]
        # Slots fill from 0 upward, so the first `count` slots hold the records.
        recorded = torch.arange(self.window, device=history.device) < counts.unsqueeze(1)
        recorded = recorded.unsqueeze(1).to(history.dtype)  # [B, 1, T]
        denominator = counts.clamp(min=1).to(history.dtype).view(-1, 1)
        mean = (history * recorded).sum(dim=2) / denominator
        squared = ((history - mean.unsqueeze(2)) ** 2 * recorded).sum(dim=2) / denominator
        return torch.where((counts >= 2).view(-1, 1), squared, torch.zeros_like(squared))

    def std(self, row_index: Tensor) -> Tensor:
        """Standard deviation of each candidate's recorded scores (SRNS's std[P_pos]), ``[B, M]``.

        Args:
            row_index: ``[B]`` int64 training-row indices.
        """
        return self.variance(row_index).sqrt()


def srns_select(
    candidate_logits: Tensor,
    score_std: Tensor,
    alpha: float,
    pos_logits: Tensor | None = None,
) -> Tensor:
    """SRNS: the candidate maximizing ``P_pos(j) + α · std[P_pos(j)]``.

    Ding et al. 2020, §4 (variance-based sampling): ``j* = argmax_{j ∈ M_u} P_pos(j) +
    α_t · std[P_pos(j)]``, with P_pos the current ``srns_likelihood`` and std its standard
    deviation over the last epochs (``ScoreHistory.std``). A high score alone may be a false
    negative (steadily high); a high score *with* high variance is an informative true negative.
    α = 0 reduces to DNS on the likelihood. Use ``srns_alpha_schedule`` for α_t.

    What we followed, and where we simplified: the rule and its inputs follow the paper and the
    released code (github.com/dingjingtao/SRNS, ``SRNS_real/SRNS_main.py``): likelihood
    ``σ(s_j − s_i)``, population std over a 5-epoch window, α warmed up linearly. The released code
    additionally keeps a per-user memory of S1 = 20 indices into a larger fixed pool of 3000
    candidates, refreshed each batch by sampling from the memory plus fresh pool indices in
    proportion to ``softmax(score / T)``, so that only S1 items are scored per step. Here each row
    has a fixed pool of M candidates, all scored at every step; with M of the order of S1 the
    memory stage has nothing left to save, so it is omitted (and with it any sampling: the
    selection is a deterministic argmax). The released code's ``alpha < 0`` mode (std alone) is not
    offered.

    Args:
        candidate_logits: ``[B, M]`` current scores of the row's candidates.
        score_std: ``[B, M]`` std of the candidates' recorded likelihoods.
        alpha: α_t ≥ 0, weight of the std term.
        pos_logits: optional ``[B]`` scores of each row's positive (see ``srns_likelihood``).

    Returns:
        ``[B]`` int64 indices into the candidate axis.
    """
    _check_candidate_logits(candidate_logits, "srns_select")
    if score_std.shape != candidate_logits.shape:
        raise ValueError(
            f"srns_select: score_std has shape {tuple(score_std.shape)} but candidate_logits has "
            f"{tuple(candidate_logits.shape)}; pass ScoreHistory.std(row_index) for these rows"
        )
    if not alpha >= 0:
        raise ValueError(f"srns_select: alpha must be >= 0, got {alpha!r}")
    likelihood = srns_likelihood(candidate_logits.detach(), pos_logits)
    return (likelihood + alpha * score_std.to(likelihood.dtype)).argmax(dim=1)
