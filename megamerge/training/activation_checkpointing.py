"""`--checkpoint-activations`: recompute every Transformer block in the backward pass, applied
from outside the model (torchtitan style) by wrapping each block's forward."""

from __future__ import annotations

import functools

from torch import nn
from torch.utils.checkpoint import checkpoint

from megamerge.models.common.block import TransformerBlock


def apply_activation_checkpointing(model: nn.Module) -> int:
    wrapped = 0
    for module in model.modules():
        if isinstance(module, TransformerBlock):
            forward = module.forward
            module.forward = functools.partial(checkpoint, forward, use_reentrant=False)
            wrapped += 1
    return wrapped
