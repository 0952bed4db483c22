"""Counter-based randomness: a seeded 64-bit hash of integer keys.

Splits, label-density selection and the synthetic planted truth are functions of a *key*
(seed, user, item), not of a random stream. A stream's output depends on the order and grouping
in which rows are visited, so a Ray Data pipeline with a different block layout would put rows in
different splits; a hash of the key gives every row the same fate wherever it is processed.

The mixer is SplitMix64 (Steele, Lea and Flood, *Fast splittable pseudorandom number
generators*, OOPSLA 2014), written in int64 torch ops so it runs unchanged on CPU and CUDA.
Products wrap modulo 2**64 and right shifts are made logical by masking, so the results equal
the reference unsigned-arithmetic definition bit for bit.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """The int64 whose two's-complement bits equal the unsigned 64-bit ``value``."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shift_right_logical(x: torch.Tensor, bits: int) -> torch.Tensor:
    # torch's >> on int64 is arithmetic (copies the sign bit); masking the top bits makes it
    # the logical shift of the unsigned reference.
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finalizer applied elementwise to an int64 tensor (bits read as unsigned).

    Args:
        x: int64 tensor on any device.

    Returns:
        int64 tensor of the same shape: the 64 output bits, as two's-complement int64.
    """
    z = x + _GOLDEN
    z = (z ^ _shift_right_logical(z, 30)) * _MIX1
    z = (z ^ _shift_right_logical(z, 27)) * _MIX2
    return z ^ _shift_right_logical(z, 31)


def splitmix64_int(x: int) -> int:
    """Scalar reference of :func:`splitmix64` in Python integers (unsigned result)."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def stream_seed(seed: int, salt: int) -> int:
    """Mix a user seed with a purpose-specific salt into one signed 64-bit value.

    Different purposes (split ranking, label density, planted truth, ...) use different salts so
    their random decisions are independent even under the same user seed.
    """
    return _signed(splitmix64_int((splitmix64_int(seed & _MASK64) ^ salt) & _MASK64))


def hash_keys(seed: int, salt: int, *keys: torch.Tensor) -> torch.Tensor:
    """Hash integer key columns (e.g. user and item ids) under ``(seed, salt)``.

    Args:
        seed: the user-facing seed.
        salt: a constant naming the purpose of the hash.
        *keys: one or more int64 tensors of equal shape, on one device.

    Returns:
        int64 tensor of hashes, same shape and device as the keys.
    """
    if not keys:
        raise ValueError("hash_keys needs at least one key tensor")
    state = torch.full_like(keys[0], stream_seed(seed, salt), dtype=torch.int64)
    for key in keys:
        state = splitmix64(state ^ key.to(torch.int64))
    return state


def hash_uniform(seed: int, salt: int, *keys: torch.Tensor) -> torch.Tensor:
    """A uniform float64 in ``[0, 1)`` per key, from the top 53 bits of :func:`hash_keys`."""
    bits = _shift_right_logical(hash_keys(seed, salt, *keys), 11)
    return bits.to(torch.float64) * (2.0**-53)
