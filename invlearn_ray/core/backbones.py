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
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Params = Mapping[str, Tensor]
Representations = tuple[Tensor, ...]


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

    def params(self) -> dict[str, Tensor]:
        """The module's own parameters by name (the mapping both stages expect)."""
        return dict(self.named_parameters())

    def head_names(self) -> tuple[str, ...]:
        return tuple(name for name in self.params() if name not in self.table_names)

    def forward(self, users: Tensor, items: Tensor, params: Params | None = None) -> Tensor:
        params = self.params() if params is None else params
        return self.head(self.representations(users, items, params), params)

    @torch.no_grad()
    def score_all(self, users: Tensor, pair_budget: int = 1 << 19) -> Tensor:
        """Logits of every item for each of ``users``: ``[len(users), n_items]``.

        The generic version scores the user × item product in chunks of at most
        ``pair_budget`` pairs (memory ∝ budget × width of the head); backbones whose head is a
        bilinear form override it with one matrix product.
        """
        n_users = len(users)
        out = torch.empty(n_users, self.n_items, device=users.device)
        items = torch.arange(self.n_items, device=users.device)
        per_chunk = max(1, pair_budget // max(n_users, 1))
        params = self.params()
        for start in range(0, self.n_items, per_chunk):
            chunk = items[start : start + per_chunk]
            pair_users = users.repeat_interleave(len(chunk))
            pair_items = chunk.repeat(n_users)
            out[:, start : start + len(chunk)] = self(pair_users, pair_items, params).view(
                n_users, len(chunk)
            )
        return out


def _normal_embedding(rows: int, dim: int, std: float = 0.01) -> nn.Parameter:
    # NCF / DenoisingRec initialise embeddings with N(0, 0.01²).
    return nn.Parameter(torch.randn(rows, dim) * std)


class _EmbeddingPair(Backbone):
    """One user table and one item table; subclasses differ only in how a pair is scored."""

    table_names = ("user_embedding", "item_embedding")
    table_index = {"user_embedding": "user", "item_embedding": "item"}

    def __init__(self, n_users: int, n_items: int, embedding_dim: int, init_std: float) -> None:
        super().__init__(n_users, n_items)
        self.embedding_dim = embedding_dim
        self.user_embedding = _normal_embedding(n_users, embedding_dim, std=init_std)
        self.item_embedding = _normal_embedding(n_items, embedding_dim, std=init_std)

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

    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 32) -> None:
        # A larger init than NCF's 0.01 keeps dot products from starting at ~1e-4 (no head scale).
        super().__init__(n_users, n_items, embedding_dim, init_std=0.1)

    def head(self, reps: Representations, params: Params) -> Tensor:
        user_rows, item_rows = reps
        return (user_rows * item_rows).sum(-1)

    @torch.no_grad()
    def score_all(self, users: Tensor, pair_budget: int = 1 << 19) -> Tensor:
        return self.user_embedding[users] @ self.item_embedding.T


class GMF(_EmbeddingPair):
    """Generalized MF (He et al. 2017): ``f(u, i) = hᵀ(p_u ⊙ q_i) + b``."""

    name = "gmf"

    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 32) -> None:
        super().__init__(n_users, n_items, embedding_dim, init_std=0.01)
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
    def score_all(self, users: Tensor, pair_budget: int = 1 << 19) -> Tensor:
        weighted_users = self.user_embedding[users] * self.predict_weight
        return weighted_users @ self.item_embedding.T + self.predict_bias


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
        self, n_users: int, n_items: int, embedding_dim: int = 32, mlp_layers: int = 3
    ) -> None:
        super().__init__(n_users, n_items)
        if mlp_layers < 1:
            raise ValueError("NeuMF: mlp_layers must be >= 1")
        self.embedding_dim = embedding_dim
        self.mlp_layers = mlp_layers
        mlp_dim = embedding_dim * 2 ** (mlp_layers - 1)
        self.gmf_user = _normal_embedding(n_users, embedding_dim)
        self.gmf_item = _normal_embedding(n_items, embedding_dim)
        self.mlp_user = _normal_embedding(n_users, mlp_dim)
        self.mlp_item = _normal_embedding(n_items, mlp_dim)
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
    ) -> None:
        super().__init__(n_users, n_items)
        if graph_users is None or graph_items is None:
            raise ValueError(
                "LightGCN needs the training-positive graph: pass graph_users and graph_items "
                "(e.g. RecData.training_positives())"
            )
        if len(graph_users) != len(graph_items):
            raise ValueError("LightGCN: graph_users and graph_items differ in length")
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.user_embedding = _normal_embedding(n_users, embedding_dim, std=0.1)
        self.item_embedding = _normal_embedding(n_items, embedding_dim, std=0.1)
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
    def score_all(self, users: Tensor, pair_budget: int = 1 << 19) -> Tensor:
        # Full-catalogue evaluation calls this once per user batch: propagate once per model
        # state. The key is the parameters' own version counters (bumped by every in-place
        # optimizer step and by load_state_dict), never ids of transient tensors.
        key = (self.user_embedding._version, self.item_embedding._version)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._propagate(self.user_embedding, self.item_embedding))
        table = self._cache[1]
        return table[users] @ table[self.n_users :].T

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module's own signature
        # Moving the module (.to / .cuda) invalidates the cached propagation.
        self._cache = None
        return super()._apply(fn, recurse)

    def config(self) -> dict[str, Any]:
        return {"embedding_dim": self.embedding_dim, "num_layers": self.num_layers}


BACKBONES: dict[str, type[Backbone]] = {cls.name: cls for cls in (MF, GMF, NeuMF, LightGCN)}


def build_backbone(name: str, n_users: int, n_items: int, **kwargs: Any) -> Backbone:
    """Construct a backbone by registry name (``mf``, ``gmf``, ``neumf``, ``lightgcn``)."""
    key = name.lower()
    if key not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; valid names: {sorted(BACKBONES)}")
    return BACKBONES[key](n_users, n_items, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
