"""Noise drawn from a seed, identical in PyTorch and ONNX Runtime.

A generator served as an ONNX graph takes a `seed` INT64 (B,) and must turn
it into the same noise every time, on every runtime: a counter-based
generator in exact int64 arithmetic (Mul / Add / Mod only, every product
below 2^62), then Box-Muller. The same function draws the noise in training,
so the served graph is the trained generator.
"""

from __future__ import annotations

import math

import torch

# Counter-based noise: all int64 products stay below 2^62 (< 2^63).
MODULUS = 2_147_483_647  # 2^31 - 1, prime
SECOND_MODULUS = 2_147_483_629  # the largest prime below it: the seed's second key
MULTIPLIER = 48_271  # Park-Miller's minimal-standard multiplier
ROUND_KEYS = (1_013_904_223, 1_664_525, 2_147_001_325, 715_136_305)


def _mulmod(a: torch.Tensor, b: torch.Tensor | int) -> torch.Tensor:
    return torch.remainder(a * b, MODULUS)


def _fifth_power(x: torch.Tensor) -> torch.Tensor:
    # x -> x^5 is a bijection of Z_p since gcd(5, p - 1) = 1; non-linear, so
    # rounds of it do not collapse into one affine map as pure LCG steps do.
    x2 = _mulmod(x, x)
    return _mulmod(_mulmod(x2, x2), x)


def uniform_noise(seed: torch.Tensor, count: int) -> torch.Tensor:
    """seed int64 (B,) -> float64 (B, count) uniforms in (0, 1).

    A keyed permutation of Z_p (p = 2^31 - 1) applied to the counter 0..count-1:
    per round add a key (alternately seed mod p and seed mod q, q the prime
    below p, plus a constant), raise to the 5th power, multiply by 48271,
    all mod p. By the Chinese remainder theorem the two keys tell apart any
    two seeds that differ by less than p * q ~ 2^62. Distinct counters of one
    seed give distinct values. Only Mul, Add and Mod (torch.remainder, floor
    mod, exported as ONNX Mod fmod=0, so negative seeds work) touch int64:
    no integer division, which the exporter would route through float32."""
    keys = (torch.remainder(seed, MODULUS).unsqueeze(1),  # (B, 1) in 0..p-1
            torch.remainder(seed, SECOND_MODULUS).unsqueeze(1))  # (B, 1) in 0..q-1
    x = torch.arange(count, dtype=torch.int64, device=seed.device).unsqueeze(0)  # (1, count)
    for r, constant in enumerate(ROUND_KEYS):
        x = torch.remainder(x + keys[r % 2] + constant, MODULUS)  # (B, count)
        x = _mulmod(_fifth_power(x), MULTIPLIER)
    return (x.to(torch.float64) + 0.5) / MODULUS


def gaussian_noise(seed: torch.Tensor, dim: int) -> torch.Tensor:
    """seed int64 (B,) -> float32 (B, dim) standard normals (Box-Muller in float64)."""
    u = uniform_noise(seed, 2 * dim).view(-1, dim, 2)  # (B, dim, 2)
    z = torch.sqrt(-2.0 * torch.log(u[..., 0])) * torch.cos(2.0 * math.pi * u[..., 1])
    return z.to(torch.float32)
