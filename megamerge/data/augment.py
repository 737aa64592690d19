"""Per-sample augmentation: crop to the model length (random or leading window) and reverse
complement with probability 1/2.

It works on a sample's shard bytes as stored (shards.py: base code | SOFTMASK_BIT), so the
soft-mask bit is cropped and reversed with its base and cannot fall out of step with it; the
complement keeps the bit.

The random choices come from a hash of (seed, epoch, sample key) rather than from a generator
that advances with the stream: a resumed loader therefore reproduces them without replaying
anything, and they do not depend on which worker or rank sees the sample.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from megamerge.data.shards import SOFTMASK_BIT
from megamerge.vocabulary import A, C, G, N, T

COMPLEMENT = np.array([T, G, C, A, N], dtype=np.uint8)  # indexed by code: A<->T, C<->G, N->N
# bytes 5..7: the model refuses 0xFF & 7
_NOT_A_CODE = np.full(SOFTMASK_BIT - COMPLEMENT.size, 0xFF, np.uint8)
# Indexed by shard byte: the complement of its code, its soft-mask bit kept.
SHARD_BYTE_COMPLEMENT = np.concatenate([COMPLEMENT, _NOT_A_CODE, COMPLEMENT | SOFTMASK_BIT, _NOT_A_CODE])


@dataclass(frozen=True)
class AugmentSpec:
    seq_len: int
    random_crop: bool = False
    reverse_complement: bool = False
    seed: int = 0


def sample_hash(seed: int, epoch: int, key: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{epoch}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def augment(codes: np.ndarray, key: str, epoch: int, spec: AugmentSpec) -> tuple[np.ndarray, int, bool]:
    """uint8 shard bytes (or plain codes) [L] -> (the same kind [min(L, seq_len)], crop offset,
    reverse-complemented?)."""
    draw = sample_hash(spec.seed, epoch, key)
    offset = 0
    if codes.size > spec.seq_len:
        if spec.random_crop:
            offset = (draw >> 1) % (codes.size - spec.seq_len + 1)
        codes = codes[offset : offset + spec.seq_len]
    flip = spec.reverse_complement and bool(draw & 1)
    if flip:
        codes = SHARD_BYTE_COMPLEMENT[codes[::-1]]
    return codes, offset, flip
