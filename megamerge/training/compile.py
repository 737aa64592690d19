"""`--compile`: regional compilation, as torchtitan does it. Each Transformer block is compiled on
its own (its forward is replaced, so parameter names and checkpoints do not change), with dynamic
shapes, because token counts change with every merge and every step. Everything between the
blocks stays eager: the merge and unmerge index code, the keyed random draws (int64 hashing), the
losses. Blocks of one kind share one compiled graph (their parameters are graph inputs)."""

from __future__ import annotations

import torch
from torch import nn

from megamerge.models.common.block import TransformerBlock


def apply_compile(model: nn.Module, backend: str = "inductor") -> int:
    """Compile the forward of every TransformerBlock of `model` in place; returns how many. Apply
    before activation checkpointing, which then checkpoints the compiled forward (dynamo does not
    trace into a forward that activation_checkpointing.py has already wrapped), and before sequence
    parallelism, whose all-to-all runs eager between the compiled parts of a block."""
    compiled = 0
    for module in model.modules():
        if isinstance(module, TransformerBlock):
            module.forward = torch.compile(module.forward, dynamic=True, backend=backend)
            compiled += 1
    return compiled
