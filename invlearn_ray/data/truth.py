"""The planted truth of a synthetic dataset: a preference model that labels every (user, item) pair.

Public datasets only label what users happened to see, so no published code can check how well
IDL/IG annotate the *unlabeled* items they sample. Here the truth of every pair is a deterministic
function of a few tables, looked up with ``PlantedTruth.labels(users, items)`` (also
``RecData.truth``), so annotation quality can be measured exactly:

* latent factors ``p_u``, ``q_i`` and biases ``b_u``, ``b_i`` give the true preference logit
  ``z(u, i) = <p_u, q_i> + b_u + b_i + z0`` and probability ``σ(z)``;
* true label ``t(u, i) = 1[h(u, i) < σ(z(u, i))]``, with ``h`` a keyed hash of the pair
  (:mod:`invlearn_ray.data.hashing`), so a pair's label never depends on which batch asks.

Cost: the tables are ``(n_users + n_items) · (dim + 1)`` float64 numbers; a lookup is
elementwise, O(dim) per pair. How the tables are drawn lives in :mod:`synthetic`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

from invlearn_ray import storage
from invlearn_ray.data.hashing import hash_uniform

SALT_TRUTH = 0x7A07
"""Hash salt of the per-pair label draw ``h(u, i)``."""


@dataclass(frozen=True)
class PlantedTruth:
    """The true preference model of a synthetic dataset; callable as a label oracle.

    Computation is on CPU in float64, elementwise per pair, so a pair's label is bit-for-bit
    the same whatever batch it is asked in (and the same as when the data were generated).
    """

    user_factors: torch.Tensor
    item_factors: torch.Tensor
    user_bias: torch.Tensor
    item_bias: torch.Tensor
    base_logit: float
    seed: int

    @property
    def n_users(self) -> int:
        return len(self.user_factors)

    @property
    def n_items(self) -> int:
        return len(self.item_factors)

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """True preference logits ``z(u, i)``, float64 on CPU."""
        users, items = users.cpu().to(torch.int64), items.cpu().to(torch.int64)
        user_factors, item_factors = self.user_factors[users], self.item_factors[items]
        logits = self.user_bias[users] + self.item_bias[items] + self.base_logit
        for k in range(user_factors.shape[1]):
            logits = logits + user_factors[:, k] * item_factors[:, k]
        return logits

    def probabilities(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """True preference probabilities ``σ(z(u, i))``, float64 on CPU."""
        return torch.sigmoid(self.logits(users, items))

    def labels(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """True labels (int8 0/1) of the pairs, on the device of ``users``."""
        draw = hash_uniform(
            self.seed, SALT_TRUTH, users.cpu().to(torch.int64), items.cpu().to(torch.int64)
        )
        return (draw < self.probabilities(users, items)).to(torch.int8).to(users.device)

    def __call__(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.labels(users, items)

    def save(self, location: storage.Location) -> None:
        """Write ``truth.npz`` at a location: plain arrays, loadable with ``allow_pickle=False``."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            user_factors=self.user_factors.numpy(),
            item_factors=self.item_factors.numpy(),
            user_bias=self.user_bias.numpy(),
            item_bias=self.item_bias.numpy(),
            base_logit=np.float64(self.base_logit),
            seed=np.int64(self.seed),
        )
        storage.write_bytes(location, buffer.getvalue())

    @classmethod
    def load(cls, location: storage.Location) -> PlantedTruth:
        with np.load(io.BytesIO(storage.read_bytes(location)), allow_pickle=False) as arrays:
            return cls(
                user_factors=torch.from_numpy(arrays["user_factors"]),
                item_factors=torch.from_numpy(arrays["item_factors"]),
                user_bias=torch.from_numpy(arrays["user_bias"]),
                item_bias=torch.from_numpy(arrays["item_bias"]),
                base_logit=float(arrays["base_logit"]),
                seed=int(arrays["seed"]),
            )
