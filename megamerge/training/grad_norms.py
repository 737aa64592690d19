"""Gradient norms of named parameter groups (MergeDNA: the merge scorers' grouping projections and
the whole Local Encoder; the family's spec names them), for metrics.jsonl beside the engine's
whole-model `grad_norm`.

Under ZeRO-2 `param.grad` is not the step's gradient: after each backward DeepSpeed reduces it into
this rank's partition and sets `param.grad` to None. `deepspeed.utils.safe_get_full_grad` is its
supported way back to the full gradient (each rank contributes its fragment to an all-reduce over
the data-parallel group; with no ZeRO it returns `param.grad`, reduced at the boundary). It sees the
gradient only between the last micro-step's backward and `engine.step()`, which frees it, so the
trainer calls `group_grad_norms` there; the all-reduce makes it a collective that every
data-parallel rank must call. Like `grad_norm` the values are before clipping, of the loss averaged
over the global batch (the engine divides each micro-step's loss by the accumulation steps).
"""

from __future__ import annotations

import torch
from torch import nn


def group_grad_norms(groups: dict[str, list[nn.Parameter]]) -> torch.Tensor:
    """[len(groups)] float32 on the parameters' device: the L2 norm of each group's full gradients,
    in the order of `groups`. A parameter in several groups is reduced once; one without a
    gradient adds 0. No host sync: the caller moves the result with its own."""
    from deepspeed.utils import safe_get_full_grad

    squares: dict[int, torch.Tensor] = {}  # id(param) -> [] its gradient's squared norm

    def squared(param: nn.Parameter) -> torch.Tensor:
        if id(param) not in squares:
            grad = safe_get_full_grad(param)
            squares[id(param)] = (torch.zeros((), device=param.device) if grad is None
                                  else grad.detach().float().square().sum())
        return squares[id(param)]

    device = next(p.device for params in groups.values() for p in params)
    return torch.stack([sum((squared(p) for p in params), torch.zeros((), device=device)).sqrt()
                        for params in groups.values()])
