"""The top of each user's unseen catalogue: the one place full-ranking metrics and
recommendations take their top-k from.

For a batch of users with every item scored (``[B, n_items]``, the only user × item object and
the caller's to bound):

1. :func:`exclude_seen_` writes ``-inf`` at each user's training items, a scatter whose cost
   grows with those items, not with the catalogue;
2. :func:`top_window` finds the ``w`` best scores of each row: one read of the row for block
   maxima, then a top-k over the ``w`` best blocks only (``torch.topk`` over a whole 131k-wide row
   costs ~8× that read on CPU);
3. :func:`top_k_unseen` orders that window by (score, item) for reproducible recommendations.

Whether a tie group at the cut-off extends past the window is visible from the window itself
(its last score equals the cut-off score); only those rows need a look at the whole row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invlearn_ray.data.recdata import UserItemIndex

BLOCK = 128
"""Items per block of :func:`top_window`: a row costs one read plus ``w × BLOCK`` candidates."""
_DIRECT_BLOCKS = 4
"""Rows of fewer than ``_DIRECT_BLOCKS × w`` blocks take a plain top-k (nothing to save)."""


def exclude_seen_(scores: Tensor, users: Tensor, seen: UserItemIndex) -> Tensor:
    """Set ``scores[b, i] = -inf`` for every item ``i`` that ``users[b]`` saw in training.

    In place; returns ``scores``. Time ∝ the batch's seen items.
    """
    rows, items = seen.batch_pairs(users)
    scores[rows, items] = -torch.inf
    return scores


@dataclass(frozen=True)
class TopWindow:
    """The ``w`` best scores of each row, best first, and the items holding them.

    The values are exact. Among items tied with the window's last score, which ones appear is
    unspecified — callers that care check whether that tie group crosses the window's end.
    """

    scores: Tensor
    items: Tensor

    @property
    def width(self) -> int:
        return self.scores.shape[1]


def top_window(scores: Tensor, width: int) -> TopWindow:
    """The ``min(width, n_items)`` best scores of each row of ``scores`` ``[B, n_items]``.

    Exact by a bound: take each block's maximum; the ``w``-th largest block maximum ``τ`` is
    held by ``w`` distinct items, so the ``w`` best scores are all ``≥ τ``, and every score
    ``> τ`` lies in one of the ``w`` blocks with the largest maxima (a block whose maximum is
    ``≤ τ`` holds none). The window is the top-``w`` of those blocks plus the ragged tail.
    NaN sorts above every number in ``torch.topk`` and ``amax``, so a NaN score at an item not
    set to ``-inf`` reaches the window. Time: one read of ``scores`` plus ``B × w × BLOCK``.
    """
    n_rows, n_items = scores.shape
    width = min(width, n_items)
    n_blocks = n_items // BLOCK
    if n_blocks < _DIRECT_BLOCKS * width:
        values, items = scores.topk(width, dim=1)
        return TopWindow(values, items)
    covered = n_blocks * BLOCK
    maxima = scores[:, :covered].view(n_rows, n_blocks, BLOCK).amax(2)
    blocks = maxima.topk(width, dim=1).indices
    offsets = torch.arange(BLOCK, device=scores.device)
    candidates = (blocks.unsqueeze(2) * BLOCK + offsets).flatten(1)
    if covered < n_items:
        tail = torch.arange(covered, n_items, device=scores.device).expand(n_rows, -1)
        candidates = torch.cat([candidates, tail], 1)
    values, position = scores.gather(1, candidates).topk(width, dim=1)
    return TopWindow(values, candidates.gather(1, position))


@torch.no_grad()
def top_k_unseen(
    scores: Tensor, users: Tensor, seen: UserItemIndex, k: int
) -> tuple[Tensor, Tensor]:
    """The ``k`` best-scored unseen items of each row, ties broken by the lower item index.

    Args:
        scores: ``[len(users), n_items]`` logits; overwritten (seen items become ``-inf``).
        users: whose rows these are. seen: each user's training items. k: items per user.

    Returns:
        ``(items, scores)``, both ``[len(users), min(k, n_items)]``, best first; where a user
        has fewer unseen items than ``k`` the tail holds score ``-inf`` (callers drop it).
        Time: one read of ``scores`` plus a top-k of ``k + 1``; a row whose ``k``-th score is
        tied beyond the window is sorted whole, so the lower index wins there too.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    exclude_seen_(scores, users, seen)
    n_items = scores.shape[1]
    keep = min(k, n_items)
    window = top_window(scores, keep + 1)
    by_item = window.items.sort(1)
    values = window.scores.gather(1, by_item.indices)
    order = values.sort(dim=1, descending=True, stable=True)
    items = by_item.values.gather(1, order.indices)[:, :keep]
    values = order.values[:, :keep]
    if window.width > keep:
        crossing = (order.values[:, keep] == order.values[:, keep - 1]).nonzero().squeeze(1)
        if len(crossing):
            whole = scores[crossing].sort(dim=1, descending=True, stable=True)
            items[crossing] = whole.indices[:, :keep]
            values[crossing] = whole.values[:, :keep]
    return items, values
