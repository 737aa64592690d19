"""Reconstruction cross-entropy over bases, averaged over the positions that count."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from megamerge.vocabulary import IGNORE_INDEX


def base_cross_entropy(
    logits: torch.Tensor,  # [B, N, C]
    targets: torch.Tensor,  # [B, N], IGNORE_INDEX where nothing is scored
    select: torch.Tensor | None = None,  # [B, N] bool: score only these (AMTM's masked bases)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (mean loss in nats per base, number correct, number scored). With nothing to
    score (an all-N batch) the loss is an exact 0 that still carries the graph."""
    if select is not None:
        targets = torch.where(select, targets, torch.full_like(targets, IGNORE_INDEX))
    flat_logits = logits.float().reshape(-1, logits.shape[-1])
    flat_targets = targets.reshape(-1)
    total = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX, reduction="sum")
    scored = flat_targets != IGNORE_INDEX
    count = scored.sum()
    correct = ((flat_logits.argmax(-1) == flat_targets) & scored).sum()
    return total / count.clamp_min(1), correct, count
