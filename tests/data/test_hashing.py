"""The key hash equals its unsigned reference definition and spreads keys uniformly."""

from __future__ import annotations

import random

import torch
from scipy import stats

from invlearn_ray.data.hashing import (
    hash_keys,
    hash_uniform,
    splitmix64,
    splitmix64_int,
    stream_seed,
)


def _as_int64(value: int) -> int:
    return value - 2**64 if value >= 2**63 else value


def test_splitmix64_matches_unsigned_python_reference_bit_for_bit():
    rng = random.Random(7)
    values = [rng.getrandbits(64) for _ in range(2000)] + [0, 1, 2**63 - 1, 2**63, 2**64 - 1]
    hashed = splitmix64(torch.tensor([_as_int64(v) for v in values], dtype=torch.int64))
    assert [h % 2**64 for h in hashed.tolist()] == [splitmix64_int(v) for v in values]


def test_hash_keys_is_a_chain_of_splitmix64_over_the_keys():
    users = torch.tensor([0, 5, 123456789])
    items = torch.tensor([3, 0, 42])
    expected = []
    for user, item in zip(users.tolist(), items.tolist(), strict=True):
        state = stream_seed(11, 99) % 2**64
        state = splitmix64_int(state ^ user)
        expected.append(splitmix64_int(state ^ item))
    got = [h % 2**64 for h in hash_keys(11, 99, users, items).tolist()]
    assert got == expected


def test_hash_depends_on_seed_salt_and_key_order():
    users, items = torch.arange(1000), torch.arange(1000) + 7
    base = hash_keys(1, 2, users, items)
    assert not torch.equal(base, hash_keys(2, 2, users, items))
    assert not torch.equal(base, hash_keys(1, 3, users, items))
    assert not torch.equal(base, hash_keys(1, 2, items, users))
    assert torch.equal(base, hash_keys(1, 2, users, items))


def test_hash_uniform_is_uniform_on_unit_interval():
    values = hash_uniform(3, 4, torch.arange(200_000)).numpy()
    assert values.min() >= 0.0 and values.max() < 1.0
    assert stats.kstest(values, "uniform").pvalue > 1e-3
