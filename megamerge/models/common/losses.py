"""Reconstruction cross-entropy over bases, averaged over the positions that count, and the
per-base loss weights of soft-masked repeats (train.py --softmask-loss-weight).

A weight multiplies a base's term in the sum; it never enters a normaliser: every loss still
divides by what the paper divides by (the scored bases, or AMTM's masked tokens K), so W < 1
lowers the loss by the soft-masked share of the batch and W = 0 takes those bases out of the
sum, as if they were not there, without raising the others' share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from megamerge.vocabulary import IGNORE_INDEX


def base_cross_entropy(
    logits: torch.Tensor,  # [B, N, C]
    targets: torch.Tensor,  # [B, N], IGNORE_INDEX where nothing is scored
    select: torch.Tensor | None = None,  # [B, N] bool: score only these (AMTM's masked bases)
    weights: torch.Tensor | None = None,  # [B, N] float: each base's term times this (None: 1)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss in nats per scored base: the weighted sum over the number scored, number
    correct, number scored). With nothing to score (an all-N batch) the loss is an exact 0 that
    still carries the graph."""
    if select is not None:
        targets = torch.where(select, targets, torch.full_like(targets, IGNORE_INDEX))
    flat_logits = logits.float().reshape(-1, logits.shape[-1])
    flat_targets = targets.reshape(-1)
    # One reduction for both cases, so that all-one weights give the unweighted loss bit for bit
    # (x * 1.0 is exact): a batch always carries weights (common/batch.py).
    per_base = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX,
                               reduction="none")  # [B*N]
    total = (per_base if weights is None else per_base * weights.reshape(-1).float()).sum()
    scored = flat_targets != IGNORE_INDEX
    count = scored.sum()
    correct = ((flat_logits.argmax(-1) == flat_targets) & scored).sum()
    return total / count.clamp_min(1), correct, count


def softmask_base_weights(softmask: torch.Tensor | None, weight: float) -> torch.Tensor | None:
    """Per-base loss weights [B, N] float: `weight` on the soft-masked bases of softmask [B, N] bool,
    1 elsewhere; None (the unweighted losses, bit for bit) when no base would get another weight."""
    if softmask is None or weight == 1.0 or not bool(softmask.any()):
        return None
    return torch.where(softmask, torch.tensor(float(weight)), torch.tensor(1.0))
