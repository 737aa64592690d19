"""Counter-based random numbers keyed by sample, not by process.

A sample's compression ratio and AMTM draw must not depend on which rank or micro-batch it lands
in: then a 2-rank run reproduces a 1-rank run with the same global batch, and a resumed run
reproduces the uninterrupted one, with no RNG state to carry. Each value is a pure function of
(sample seed, stream, index): a splitmix64 hash, vectorised over int64 tensors.
"""

from __future__ import annotations

import math

import torch

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64
_M1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_M2 = -7723592293110705685  # 0x94D049BB133111EB

STREAM_COMPRESSION = 1
STREAM_AMTM = 2


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser; int64 multiplication wraps modulo 2^64."""
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def sample_seeds(seed: int, sample_index: torch.Tensor) -> torch.Tensor:
    """One 64-bit key per sample, from the run seed and the sample's global index [B]."""
    return mix64(sample_index.long() * _GOLDEN + mix64(torch.tensor(seed, dtype=torch.long)))


def uniform(seeds: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """seeds [B] -> [B, n] floats strictly inside (0, 1)."""
    counter = torch.arange(n, device=seeds.device, dtype=torch.long)
    # filled on the device: torch.tensor(stream, device=...) would copy from the host and wait
    stream_key = mix64(torch.full((), stream, dtype=torch.long, device=seeds.device))
    z = mix64(mix64(seeds[:, None] ^ stream_key) + counter * _GOLDEN)
    return (_shr(z, 40).float() + 0.5) / float(1 << 24)


def normal(seeds: torch.Tensor, stream: int) -> torch.Tensor:
    """seeds [B] -> [B] standard normals (Box-Muller)."""
    u = uniform(seeds, stream, 2)
    return torch.sqrt(-2.0 * torch.log(u[:, 0])) * torch.cos(2.0 * math.pi * u[:, 1])
