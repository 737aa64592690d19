"""Learning rate as a pure function of the iteration (so resuming needs no scheduler state)."""

from __future__ import annotations

import math


def learning_rate(iteration: int, lr: float, min_lr: float, warmup: int, decay_iters: int,
                  style: str) -> float:
    """Linear warm-up over `warmup` iterations, then decay to `min_lr` at `decay_iters`."""
    if warmup > 0 and iteration < warmup:
        return lr * (iteration + 1) / warmup
    if style == "constant":
        return lr
    span = max(1, decay_iters - warmup)
    progress = min(1.0, (iteration - warmup) / span)
    if style == "linear":
        return min_lr + (lr - min_lr) * (1.0 - progress)
    if style == "cosine":
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown --lr-decay-style {style!r}")
