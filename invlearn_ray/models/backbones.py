"""Recommendation backbones: ``(user, item) -> logit``.

Every backbone is split into two stages:

* ``representations(users, items, params)`` — a function that is **linear in the embedding
  tables** (a row gather for MF/GMF/NeuMF; graph propagation then a gather for LightGCN);
* ``head(reps, params)`` — everything after it (small dense parameters, nonlinearities).

The split is what makes Inverse Gradient cheap: the three candidates θ − α·s, θ, θ + α·s differ
only by multiples of one direction ``s``, and by linearity
``representations(θ + c·α·s) = representations(θ) + c·α·representations(s)``. So the candidates
are evaluated from *gathered rows* (and a 3× stack of the small head), never from three copies
of the embedding tables. Both stages take an explicit parameter mapping, which is also what
``torch.func`` needs.

Scoring the whole catalogue (full-ranking metrics, recommendations) goes through
:meth:`Backbone.catalogue_scorer`, built once per evaluation. Backbones whose logit is a dot
product after a per-side transform expose :meth:`Backbone.factors` and score a user batch with
one matrix product; the others (NeuMF) say how to score the catalogue as cheaply as their head
allows.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Params = Mapping[str, Tensor]
Representations = tuple[Tensor, ...]
CatalogueScorer = Callable[[Tensor], Tensor]
"""``users [B] -> logits [B, n_items]``: every item's logit for a batch of users."""


@dataclass(frozen=True)
class Factors:
    """A backbone's logits as one dot product: ``f(u, i) = <user[u], item[i]> + constant``.

    The factorized scoring contract. Anything after a per-side transform folds in: GMF's head
    weight ``h`` scales the user side (``hᵀ(p ⊙ q) = <h ⊙ p, q>``) and its bias is the constant;
    LightGCN's sides are its propagated tables; a biased MF ``μ + b_u + b_i + <p_u, q_i>``
    augments the columns, ``user = [p_u, b_u, 1]``, ``item = [q_i, 1, b_i]``, ``constant = μ``.
    Full-catalogue ranking then costs one ``[B, d] @ [d, n_items]`` product per user batch.

    Attributes:
        user: ``[n_users, d]``. item: ``[n_items, d]``. constant: added to every logit.
    """

    user: Tensor
    item: Tensor
    constant: float = 0.0

    def scores(self, users: Tensor, out: Tensor | None = None) -> Tensor:
        """Logits ``[len(users), n_items]``, into ``out`` if given.

        Time ∝ users × items × d; memory: the ``[len(users), n_items]`` result.
        """
        constant = torch.tensor(self.constant, dtype=self.item.dtype, device=self.item.device)
        return torch.addmm(constant, self.user[users], self.item.T, out=out)

    def pair_scores(self, users: Tensor, items: Tensor) -> Tensor:
        """Logits of ``(users[k], items[k])`` pairs: ``[len(users)]``, time ∝ rows × d."""
        return (self.user[users] * self.item[items]).sum(-1) + self.constant

    def scorer(self) -> CatalogueScorer:
        """:meth:`scores` into one reused buffer: each call overwrites the previous result.

        Ranking consumes a batch before it scores the next, and a fresh ``[B, n_items]``
        allocation per batch costs page faults that, on CPU at 131k items, take about as long
        as the product itself.
        """
        buffer = self.item.new_empty(0, len(self.item))

        def score(users: Tensor) -> Tensor:
            nonlocal buffer
            if len(buffer) < len(users):
                buffer = self.item.new_empty(len(users), len(self.item))
            return self.scores(users, out=buffer[: len(users)])

        return score


class Backbone(nn.Module, ABC):
    """Base class: one scoring contract for every model, so trainers never special-case one."""

    name: str = ""
    table_names: tuple[str, ...] = ()
    """Parameters of the linear representation stage (embedding tables)."""
    table_index: dict[str, str] | None = None
    """For backbones whose representations are plain row gathers — one per table, in
    ``table_names`` order — which id (``user`` or ``item``) indexes each table. Lets IG work on
    the touched rows only. None otherwise."""

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        if n_users <= 0 or n_items <= 0:
            raise ValueError(f"{type(self).__name__}: n_users and n_items must be positive")
        self.n_users = n_users
        self.n_items = n_items

    @abstractmethod
    def representations(self, users: Tensor, items: Tensor, params: Params) -> Representations:
        """Per-row representations, linear in ``params[t]`` for ``t in table_names``."""

    @abstractmethod
    def head(self, reps: Representations, params: Params) -> Tensor:
        """Logits ``[...]`` from representations; the only place nonlinearity may appear."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON types, for save/load without the trainer."""

    learns_item_bias: bool = False
    """Whether the logit has a per-item additive term that :meth:`start_from_item_prior` can
    set (the popularity-prior initialisation, ``TrainConfig.bias_init``)."""

    def start_from_item_prior(self, item_logits: Tensor) -> None:
        """Start from the popularity scorer's ranking: item ``i``'s additive term becomes
        ``item_logits[i]``. Only backbones with ``learns_item_bias`` have such a term."""
        raise ValueError(
            f"backbone {self.name!r} has no per-item bias to start from the popularity prior; "
            "use bias_init='zero' or backbone 'biased_mf'"
        )

    def params(self) -> dict[str, Tensor]:
        """The module's own parameters by name (the mapping both stages expect)."""
        return dict(self.named_parameters())

    def head_names(self) -> tuple[str, ...]:
        return tuple(name for name in self.params() if name not in self.table_names)

    def forward(self, users: Tensor, items: Tensor, params: Params | None = None) -> Tensor:
        params = self.params() if params is None else params
        return self.head(self.representations(users, items, params), params)

    def factors(self) -> Factors | None:
        """The logits as one dot product (:class:`Factors`), or None when the head is not one.

        Built from the current parameters, without gradients; call it again after a step.
        """
        return None

    @torch.no_grad()
    def catalogue_scorer(self) -> CatalogueScorer:
        """A function giving every item's logit for a batch of users, for ranking.

        Whatever does not depend on the user batch is computed here, once; build a scorer per
        evaluation (it does not follow later optimizer steps). Factorized backbones score a
        batch with one matrix product; the generic fallback pushes every pair through the
        whole forward (:func:`score_all_pairwise`). A scorer may reuse its output buffer:
        a call's result is valid until the next call.
        """
        factors = self.factors()
        if factors is not None:
            return factors.scorer()
        return lambda users: score_all_pairwise(self, users)

    @torch.no_grad()
    def score_all(self, users: Tensor) -> Tensor:
        """Logits of every item for each of ``users``: ``[len(users), n_items]``."""
        return self.catalogue_scorer()(users).clone()


@torch.no_grad()
def score_all_pairwise(model: Backbone, users: Tensor, pair_budget: int = 1 << 19) -> Tensor:
    """Every item's logit for ``users`` through the whole forward, pair by pair.

    The reference any faster catalogue scorer must equal. Time ∝ users × items × the head's
    cost per pair; memory ∝ ``pair_budget`` × the head's width.
    """
    n_users = len(users)
    out = torch.empty(n_users, model.n_items, device=users.device)
    items = torch.arange(model.n_items, device=users.device)
    per_chunk = max(1, pair_budget // max(n_users, 1))
    params = model.params()
    for start in range(0, model.n_items, per_chunk):
        chunk = items[start : start + per_chunk]
        pair_users = users.repeat_interleave(len(chunk))
        pair_items = chunk.repeat(n_users)
        out[:, start : start + len(chunk)] = model(pair_users, pair_items, params).view(
            n_users, len(chunk)
        )
    return out


RowRange = Callable[[int], tuple[int, int]]
"""``n_rows -> (start, stop)``: the rows of a table one process holds."""

_HELD_ROWS: ContextVar[RowRange | None] = ContextVar("held_rows", default=None)


@contextmanager
def holding_rows(rows: RowRange) -> Iterator[None]:
    """Backbones built inside hold only rows ``rows(n_rows)`` of each random-initialised table.

    Each kept row has the value the whole table would give it, and the random generator ends
    where the whole table's draw leaves it, so every later initialisation (head layers, the
    next table) is unchanged: a process holding one shard starts from the rows of the
    one-process model (``invlearn_ray.optim.sharded_tables``). Time: the whole table's draw;
    memory: the held rows and one chunk of the draw.
    """
    token = _HELD_ROWS.set(rows)
    try:
        yield
    finally:
        _HELD_ROWS.reset(token)


def normal_rows(rows: int, dim: int, start: int, stop: int, chunk: int = 1 << 20) -> Tensor:
    """Rows ``start:stop`` of ``torch.randn(rows, dim)``, drawn in chunks of about ``chunk``
    numbers so the whole table is never allocated.

    CPU ``randn`` fills blocks of 16 numbers from one uniform stream (Box–Muller within a
    block; a length not a multiple of 16 redraws its last 16). Chunks of a multiple of 16
    numbers, the last at least 16 long, therefore draw the numbers of one call, bit for bit
    (``tests/models/test_backbones.py`` checks it).
    """
    per = max(1, chunk // dim)
    while (per * dim) % 16:
        per += 1
    kept: list[Tensor] = []
    first = 0
    while first < rows:
        last = min(rows, first + per)
        if 0 < (rows - last) * dim < 16:  # a short tail would take randn's scalar path
            last = rows
        block = torch.randn(last - first, dim)
        if last > start and first < stop:
            kept.append(block[max(start, first) - first : min(stop, last) - first].clone())
        first = last
    return torch.cat(kept) if kept else torch.empty(0, dim)


def _normal_embedding(rows: int, dim: int, std: float = 0.01) -> nn.Parameter:
    # NCF / DenoisingRec initialise embeddings with N(0, 0.01²).
    held = _HELD_ROWS.get()
    if held is None:
        return nn.Parameter(torch.randn(rows, dim) * std)
    return nn.Parameter(normal_rows(rows, dim, *held(rows)) * std)


def _check_init_scale(name: str, init_scale: float) -> None:
    if not init_scale > 0:
        raise ValueError(f"{name}: init_scale must be > 0, got {init_scale!r}")


class _EmbeddingPair(Backbone):
    """One user table and one item table; subclasses differ only in how a pair is scored.

    ``init_scale`` multiplies the tables' initial standard deviation ``init_std`` (every
    backbone takes it): a bilinear score starts at ~``d · std²``, so a labeled-only GMF from
    N(0, 0.01²) with a handful of steps per epoch never leaves its saddle (issue 13: AUC 0.50
    at 3 % of ML-1M labels). Only the embedding tables are scaled; head layers keep their own
    initialisation.
    """

    table_names = ("user_embedding", "item_embedding")
    table_index = {"user_embedding": "user", "item_embedding": "item"}

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int,
        init_std: float,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__(n_users, n_items)
        _check_init_scale(type(self).__name__, init_scale)
        self.embedding_dim = embedding_dim
        std = init_std * init_scale
        self.user_embedding = _normal_embedding(n_users, embedding_dim, std=std)
        self.item_embedding = _normal_embedding(n_items, embedding_dim, std=std)

    def representations(self, users: Tensor, items: Tensor, params: Params) -> Representations:
        return (
            F.embedding(users, params["user_embedding"]),
            F.embedding(items, params["item_embedding"]),
        )

    def config(self) -> dict[str, Any]:
        return {"embedding_dim": self.embedding_dim}


class MF(_EmbeddingPair):
    """Matrix factorisation: ``f(u, i) = <p_u, q_i>``."""

    name = "mf"

    def __init__(
        self, n_users: int, n_items: int, embedding_dim: int = 32, init_scale: float = 1.0
    ) -> None:
        # A larger init than NCF's 0.01 keeps dot products from starting at ~1e-4 (no head scale).
        super().__init__(n_users, n_items, embedding_dim, init_std=0.1, init_scale=init_scale)

    def head(self, reps: Representations, params: Params) -> Tensor:
        user_rows, item_rows = reps
        return (user_rows * item_rows).sum(-1)

    @torch.no_grad()
    def factors(self) -> Factors:
        return Factors(self.user_embedding.detach(), self.item_embedding.detach())


class GMF(_EmbeddingPair):
    """Generalized MF (He et al. 2017): ``f(u, i) = hᵀ(p_u ⊙ q_i) + b``."""

    name = "gmf"

    def __init__(
        self, n_users: int, n_items: int, embedding_dim: int = 32, init_scale: float = 1.0
    ) -> None:
        super().__init__(n_users, n_items, embedding_dim, init_std=0.01, init_scale=init_scale)
        predict = nn.Linear(embedding_dim, 1)
        nn.init.kaiming_uniform_(predict.weight, a=1, nonlinearity="sigmoid")
        nn.init.zeros_(predict.bias)
        self.predict_weight = nn.Parameter(predict.weight.detach().view(-1).clone())
        self.predict_bias = nn.Parameter(predict.bias.detach().clone())

    def head(self, reps: Representations, params: Params) -> Tensor:
        user_rows, item_rows = reps
        # Multiply-and-sum, not a matmul: under IG's vmap a 1-column matmul becomes a slow bmm.
        product = user_rows * item_rows * params["predict_weight"]
        return product.sum(-1) + params["predict_bias"]

    @torch.no_grad()
    def factors(self) -> Factors:
        # hᵀ(p ⊙ q) + b = <h ⊙ p, q> + b: the head weight folds into the user side.
        return Factors(
            self.user_embedding * self.predict_weight,
            self.item_embedding.detach(),
            float(self.predict_bias),
        )


class BiasedMF(_EmbeddingPair):
    """Biased matrix factorisation: ``f(u, i) = μ + b_u + b_i + <p_u, q_i>``.

    RecBole's FM on two fields (user id, item id): a global bias, first-order user and item
    biases, and the second-order interaction. The biases let it learn item popularity and user
    leniency — which alone rank far above chance (issue 13's popularity anchor) — and which
    GMF/NeuMF can only express through their factors. Initialisation: biases at 0, ``μ`` at 0
    (or, with ``TrainConfig.bias_init='popularity'``, ``μ + b_i`` at the popularity scorer's
    item logit: :meth:`start_from_item_prior`), factors N(0, 0.1²) × ``init_scale`` (the MF
    scale: a dot product of 0.01-scale factors starts at ~1e-4 and barely moves for several
    epochs).

    The biases are one-column tables gathered like the factors, so the representation stage
    stays a row gather (linear in the tables, touched rows only) and ``μ`` is the head.
    """

    name = "biased_mf"
    table_names = ("user_embedding", "item_embedding", "user_bias", "item_bias")
    table_index = {
        "user_embedding": "user",
        "item_embedding": "item",
        "user_bias": "user",
        "item_bias": "item",
    }

    def __init__(
        self, n_users: int, n_items: int, embedding_dim: int = 32, init_scale: float = 1.0
    ) -> None:
        super().__init__(n_users, n_items, embedding_dim, init_std=0.1, init_scale=init_scale)
        self.user_bias = nn.Parameter(torch.zeros(n_users, 1))
        self.item_bias = nn.Parameter(torch.zeros(n_items, 1))
        self.global_bias = nn.Parameter(torch.zeros(1))

    learns_item_bias = True

    @torch.no_grad()
    def start_from_item_prior(self, item_logits: Tensor) -> None:
        if item_logits.shape != (self.n_items,):
            raise ValueError(
                f"item_logits must have shape ({self.n_items},), got {tuple(item_logits.shape)}"
            )
        # μ takes the mean so that b_i is centred, as training would leave it; the sum is the
        # prior's logit, and b_u = 0 keeps every user's ranking the prior's.
        mean = item_logits.mean()
        self.global_bias.copy_(mean.reshape(1))
        self.item_bias.copy_((item_logits - mean).unsqueeze(1))

    def representations(self, users: Tensor, items: Tensor, params: Params) -> Representations:
        return (
            F.embedding(users, params["user_embedding"]),
            F.embedding(items, params["item_embedding"]),
            F.embedding(users, params["user_bias"]).squeeze(-1),
            F.embedding(items, params["item_bias"]).squeeze(-1),
        )

    def head(self, reps: Representations, params: Params) -> Tensor:
        user_rows, item_rows, user_bias, item_bias = reps
        return (user_rows * item_rows).sum(-1) + user_bias + item_bias + params["global_bias"]

    @torch.no_grad()
    def factors(self) -> Factors:
        # μ + b_u + b_i + <p, q> = <[p, b_u, 1], [q, 1, b_i]> + μ: augmented columns.
        return Factors(
            torch.cat([self.user_embedding, self.user_bias, torch.ones_like(self.user_bias)], 1),
            torch.cat([self.item_embedding, torch.ones_like(self.item_bias), self.item_bias], 1),
            float(self.global_bias),
        )


class NeuMF(Backbone):
    """NeuMF (He et al. 2017): GMF ⊕ an MLP tower, joined by one linear layer.

    Follows the NCF code DenoisingRec and the paper build on: GMF factors of size
    ``embedding_dim``; MLP embeddings of size ``embedding_dim · 2^(layers-1)`` per side, so the
    tower halves ``2·that → … → embedding_dim`` over ``mlp_layers`` ReLU layers. No dropout by
    default (the paper's runs use 0; dropout would also make IG's candidate comparison noisy).
    """

    name = "neumf"
    table_names = ("gmf_user", "gmf_item", "mlp_user", "mlp_item")
    table_index = {"gmf_user": "user", "gmf_item": "item", "mlp_user": "user", "mlp_item": "item"}

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int = 32,
        mlp_layers: int = 3,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__(n_users, n_items)
        if mlp_layers < 1:
            raise ValueError("NeuMF: mlp_layers must be >= 1")
        _check_init_scale("NeuMF", init_scale)
        self.embedding_dim = embedding_dim
        self.mlp_layers = mlp_layers
        mlp_dim = embedding_dim * 2 ** (mlp_layers - 1)
        std = 0.01 * init_scale
        self.gmf_user = _normal_embedding(n_users, embedding_dim, std)
        self.gmf_item = _normal_embedding(n_items, embedding_dim, std)
        self.mlp_user = _normal_embedding(n_users, mlp_dim, std)
        self.mlp_item = _normal_embedding(n_items, mlp_dim, std)
        width = 2 * mlp_dim
        for layer in range(mlp_layers):
            linear = nn.Linear(width, width // 2)
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
            self.register_parameter(f"mlp_{layer}_weight", nn.Parameter(linear.weight.detach()))
            self.register_parameter(f"mlp_{layer}_bias", nn.Parameter(linear.bias.detach()))
            width //= 2
        predict = nn.Linear(2 * embedding_dim, 1)
        nn.init.kaiming_uniform_(predict.weight, a=1, nonlinearity="sigmoid")
        self.predict_weight = nn.Parameter(predict.weight.detach().view(-1).clone())
        self.predict_bias = nn.Parameter(torch.zeros(1))

    def representations(self, users: Tensor, items: Tensor, params: Params) -> Representations:
        return (
            F.embedding(users, params["gmf_user"]),
            F.embedding(items, params["gmf_item"]),
            F.embedding(users, params["mlp_user"]),
            F.embedding(items, params["mlp_item"]),
        )

    def head(self, reps: Representations, params: Params) -> Tensor:
        gmf_user, gmf_item, mlp_user, mlp_item = reps
        hidden = torch.cat([mlp_user, mlp_item], dim=-1)
        for layer in range(self.mlp_layers):
            hidden = F.relu(
                F.linear(hidden, params[f"mlp_{layer}_weight"], params[f"mlp_{layer}_bias"])
            )
        joined = torch.cat([gmf_user * gmf_item, hidden], dim=-1)
        return joined @ params["predict_weight"] + params["predict_bias"]

    @torch.no_grad()
    def catalogue_scorer(self, pair_budget: int = 1 << 16) -> CatalogueScorer:
        """Every item's logit for a user batch, with each side's share of the work done once.

        The first MLP layer is linear in ``concat(m_u, m_i)``: ``W·[m_u; m_i] + b = W_u m_u +
        (W_i m_i + b)``, so both sides' pre-activations are computed once per table row, and a
        pair pays one add, the ReLU and the later layers (at the default sizes 10.3k of the
        43k multiply-adds per pair of the plain forward). The GMF half is a dot product. Time ∝
        users × items × that per-pair cost; memory ∝ ``pair_budget`` × the first layer's
        width, plus the ``[B, n_items]`` result.
        """
        mlp_dim = self.mlp_user.shape[1]
        first_weight = self.mlp_0_weight
        item_pre = torch.addmm(self.mlp_0_bias, self.mlp_item, first_weight[:, mlp_dim:].T)
        gmf = Factors(
            self.gmf_user * self.predict_weight[: self.embedding_dim],
            self.gmf_item.detach(),
            float(self.predict_bias),
        )
        mlp_weight = self.predict_weight[self.embedding_dim :]
        later_layers = [
            (getattr(self, f"mlp_{layer}_weight"), getattr(self, f"mlp_{layer}_bias"))
            for layer in range(1, self.mlp_layers)
        ]

        def score(users: Tensor) -> Tensor:
            out = gmf.scores(users)
            user_pre = self.mlp_user[users] @ first_weight[:, :mlp_dim].T
            per_chunk = max(1, pair_budget // max(len(users), 1))
            for start in range(0, self.n_items, per_chunk):
                chunk = item_pre[start : start + per_chunk]
                # In place where possible: each chunk's activations are the memory traffic.
                hidden = (user_pre.unsqueeze(1) + chunk.unsqueeze(0)).flatten(0, 1).relu_()
                for weight, bias in later_layers:
                    hidden = torch.addmm(bias, hidden, weight.T).relu_()
                out[:, start : start + len(chunk)] += (hidden @ mlp_weight).view(len(users), -1)
            return out

        return score

    def config(self) -> dict[str, Any]:
        return {"embedding_dim": self.embedding_dim, "mlp_layers": self.mlp_layers}


class LightGCN(Backbone):
    """LightGCN (He et al. 2020): the mean of K propagations over the normalized user–item graph.

    ``f(u, i) = <e_u, e_i>`` with ``E = mean_k Â^k E⁰`` and ``Â = D^-½ A D^-½`` the symmetric
    normalization of the bipartite graph of training positives. Propagation is linear in E⁰, so
    the two-stage contract holds. The graph edges are buffers: saved with the model, so a loaded
    model needs no training data. Propagated tables are cached only for gradient-free scoring
    and the cache is keyed on the tables' version counters, so any optimizer step or
    ``load_state_dict`` invalidates it.
    """

    name = "lightgcn"
    table_names = ("user_embedding", "item_embedding")

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int = 32,
        num_layers: int = 3,
        graph_users: Tensor | None = None,
        graph_items: Tensor | None = None,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__(n_users, n_items)
        _check_init_scale("LightGCN", init_scale)
        if graph_users is None or graph_items is None:
            raise ValueError(
                "LightGCN needs the training-positive graph: pass graph_users and graph_items "
                "(e.g. RecData.training_positives())"
            )
        if len(graph_users) != len(graph_items):
            raise ValueError("LightGCN: graph_users and graph_items differ in length")
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.user_embedding = _normal_embedding(n_users, embedding_dim, std=0.1 * init_scale)
        self.item_embedding = _normal_embedding(n_items, embedding_dim, std=0.1 * init_scale)
        self.register_buffer("graph_users", graph_users.to(torch.int64).clone())
        self.register_buffer("graph_items", graph_items.to(torch.int64).clone())
        self._derive_edges()
        # Loading weights may bring another graph: derive its edges again.
        self.register_load_state_dict_post_hook(lambda module, _: module._derive_edges())
        self._cache: tuple[tuple[int, ...], Tensor] | None = None

    def _derive_edges(self) -> None:
        """Both directions of every edge and their weights ``1/√(d_r·d_c)``: derived from the
        graph, so not saved (``persistent=False``), but moved with the module by ``.to()``."""
        n_users = self.n_users
        rows = torch.cat([self.graph_users, self.graph_items + n_users])
        cols = torch.cat([self.graph_items + n_users, self.graph_users])
        degree = torch.bincount(rows, minlength=n_users + self.n_items).to(torch.float32)
        inv_sqrt = degree.clamp(min=1.0).rsqrt()
        weights = (inv_sqrt[rows] * inv_sqrt[cols]).unsqueeze(1)
        self.register_buffer("edge_rows", rows, persistent=False)
        self.register_buffer("edge_cols", cols, persistent=False)
        self.register_buffer("edge_weights", weights, persistent=False)
        self._cache = None

    def _propagate(self, user_table: Tensor, item_table: Tensor) -> Tensor:
        # Â·E as a gather, a weighting and an index_add over the edge list rather than a sparse
        # matmul: dense ops only, so torch.func can differentiate it and torch.compile fuse it.
        rows, cols, weights = self.edge_rows, self.edge_cols, self.edge_weights
        layer = torch.cat([user_table, item_table])
        total = layer
        for _ in range(self.num_layers):
            layer = torch.zeros_like(layer).index_add(0, rows, layer[cols] * weights)
            total = total + layer
        return total / (self.num_layers + 1)

    def representations(self, users: Tensor, items: Tensor, params: Params) -> Representations:
        table = self._propagate(params["user_embedding"], params["item_embedding"])
        return (F.embedding(users, table), F.embedding(items + self.n_users, table))

    def head(self, reps: Representations, params: Params) -> Tensor:
        user_rows, item_rows = reps
        return (user_rows * item_rows).sum(-1)

    @torch.no_grad()
    def factors(self) -> Factors:
        # Recommending calls this once per user batch: propagate once per model state. The key
        # is the parameters' own version counters (bumped by every in-place optimizer step and
        # by load_state_dict), never ids of transient tensors.
        key = (self.user_embedding._version, self.item_embedding._version)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._propagate(self.user_embedding, self.item_embedding))
        table = self._cache[1]
        return Factors(table[: self.n_users], table[self.n_users :])

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module's own signature
        # Moving the module (.to / .cuda) invalidates the cached propagation.
        self._cache = None
        return super()._apply(fn, recurse)

    def config(self) -> dict[str, Any]:
        return {"embedding_dim": self.embedding_dim, "num_layers": self.num_layers}


class ItemPrior(Backbone):
    """A scorer, not a trained backbone: one fixed logit per item, the same for every user.

    The model of methods that do not train (``popularity``: an item's smoothed labeled-positive
    rate and play count, :mod:`invlearn_ray.methods.popularity`). It honours the scoring contract
    — pairs, the catalogue, :class:`Factors` (``user = 1``, ``item = logit``), save/load — so
    evaluation, recommendation and the run folder treat it as any model. It has no parameters;
    the logits are a buffer.
    """

    name = "item_prior"

    def __init__(self, n_users: int, n_items: int, item_logits: Tensor | None = None) -> None:
        super().__init__(n_users, n_items)
        logits = torch.zeros(n_items) if item_logits is None else item_logits.to(torch.float32)
        if logits.shape != (n_items,):
            raise ValueError(f"ItemPrior: item_logits must have shape ({n_items},)")
        self.register_buffer("item_logits", logits.clone())

    def representations(self, users: Tensor, items: Tensor, params: Params) -> Representations:
        return (self.item_logits[items],)

    def head(self, reps: Representations, params: Params) -> Tensor:
        return reps[0]

    @torch.no_grad()
    def factors(self) -> Factors:
        ones = self.item_logits.new_ones(self.n_users, 1)
        return Factors(ones, self.item_logits.unsqueeze(1))

    def config(self) -> dict[str, Any]:
        return {}


BACKBONES: dict[str, type[Backbone]] = {
    cls.name: cls for cls in (MF, GMF, BiasedMF, NeuMF, LightGCN)
}
"""The trainable backbones (``TrainConfig.backbone``)."""
MODELS: dict[str, type[Backbone]] = {**BACKBONES, ItemPrior.name: ItemPrior}
"""Every model a run can save: the backbones and the non-trained scorers."""


def build_backbone(name: str, n_users: int, n_items: int, **kwargs: Any) -> Backbone:
    """Construct a model by registry name (:data:`MODELS`: ``gmf``, ``biased_mf``, ...)."""
    key = name.lower()
    if key not in MODELS:
        raise KeyError(f"unknown backbone {name!r}; valid names: {sorted(MODELS)}")
    return MODELS[key](n_users, n_items, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
