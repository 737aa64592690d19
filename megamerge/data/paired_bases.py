"""A corpus whose right merges are unambiguous, for testing that the learned tokenizer learns.

Every sequence is a run of base pairs, each two distinct bases drawn at random and written in
alphabetical order (A < C < G < T), starting at a random phase (0 or 1 base into a pair). A token
made of exactly one pair loses nothing: its bases as a bag, which is all the paper's size-weighted
average keeps, name the ordered pair. A token that straddles two pairs holds the larger base of one
pair and the smaller of the next, which are independent, so their order is close to a coin flip
that neighbouring tokens barely inform (a cyclic rule such as (x, x+1) would let the decoder solve
a consistently shifted tokenization from its neighbours). At L = N/2 the best tokenizer therefore
cuts exactly the pairs, and finding them needs the phase, which only the content tells.
"""

from __future__ import annotations

import torch


def paired_bases(generator: torch.Generator, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (ids [batch, length] long, A, C, G, T = 0..3; pair_start [batch, length - 1] bool, True
    where a pair starts at base n + 1: the boundaries of the right tokenization)."""
    first = torch.randint(0, 4, (batch, length // 2 + 1), generator=generator)
    second = (first + torch.randint(1, 4, first.shape, generator=generator)) % 4  # never equal to first
    low, high = torch.minimum(first, second), torch.maximum(first, second)
    pairs = torch.stack([low, high], -1).view(batch, -1)  # [batch, length + 2]
    phase = torch.randint(0, 2, (batch, 1), generator=generator)
    position = torch.arange(length)[None] + phase  # [batch, length] position in the pair run
    return pairs.gather(1, position), (position[:, 1:] % 2 == 0)


def boundary_agreement(assign: torch.Tensor, pair_start: torch.Tensor) -> float:
    """The share of the N-1 places between adjacent bases where a tokenization (assign [B, N], base
    -> token) and the pairs agree on whether a token starts."""
    return float(((assign.diff(dim=1) != 0) == pair_start).float().mean())
