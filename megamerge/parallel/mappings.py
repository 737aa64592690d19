"""The two autograd functions at the edges of a tensor-parallel region (Megatron's mappings).

    copy    forward: identity          backward: all-reduce   (enter a column-parallel layer)
    reduce  forward: all-reduce        backward: identity     (leave a row-parallel layer)

They are conjugate, so a forward that is exact on every rank gets gradients that are exact on
every rank. (Megatron's scatter / gather pair, for layers whose input or output is split along
the features, has no use here: every split block enters column-parallel and leaves row-parallel.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _all_reduce(x: torch.Tensor, group) -> torch.Tensor:
    if dist.get_world_size(group) == 1:
        return x
    x = x.contiguous()  # all_reduce works in place; never touch the caller's tensor
    out = x.clone()
    dist.all_reduce(out, group=group)
    return out


class _Copy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad, ctx.group), None


class _Reduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        return _all_reduce(x, group)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def copy_to_tensor_parallel_region(x: torch.Tensor, group) -> torch.Tensor:
    return _Copy.apply(x, group)


def reduce_from_tensor_parallel_region(x: torch.Tensor, group) -> torch.Tensor:
    return _Reduce.apply(x, group)

