"""Megatron-core style tensor-parallel linear layers (no bias: MergeDNA's projections have none).

ColumnParallelLinear holds rows [r * out/tp, (r + 1) * out/tp) of the full [out, in] weight: each
rank computes its slice of the output features (for attention, its slice of the heads).
RowParallelLinear holds columns [r * in/tp, (r + 1) * in/tp): its input is the matching slice of
the features (a column-parallel layer's output) and the partial products are summed with an
all-reduce. Column then row is the only composition used (attention: wq/wk/wv then wo; SwiGLU:
w1/w3 then w2), so neither layer gathers its output or splits its input.

`from_full` builds a layer from the full master weight, so every TP degree starts from exactly
the weights a TP=1 run would have.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .mappings import copy_to_tensor_parallel_region, reduce_from_tensor_parallel_region


def mark_tensor_parallel(param: nn.Parameter, partition_dim: int) -> None:
    """The flags DeepSpeed (`is_model_parallel_parameter`) and Megatron tooling read. Only sharded
    parameters may carry them: ZeRO counts a flagged parameter's gradient norm on every TP rank."""
    param.tensor_model_parallel = True
    param.model_parallel = True
    param.partition_dim = partition_dim
    param.partition_stride = 1


def _shard(full: torch.Tensor, dim: int, group) -> torch.Tensor:
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if full.shape[dim] % world:
        raise ValueError(f"dimension {dim} of size {full.shape[dim]} is not divisible by the tensor-parallel "
                         f"size {world}")
    return full.chunk(world, dim=dim)[rank].clone()


class ColumnParallelLinear(nn.Module):
    partition_dim = 0

    def __init__(self, in_features: int, out_features: int, group, device=None, dtype=None):
        super().__init__()
        world = dist.get_world_size(group)
        if out_features % world:
            raise ValueError(f"ColumnParallelLinear: out_features={out_features} is not divisible by the "
                             f"tensor-parallel size {world}")
        self.in_features, self.out_features = in_features, out_features
        self.group = group
        self.weight = nn.Parameter(torch.empty(out_features // world, in_features, device=device,
                                               dtype=dtype))
        mark_tensor_parallel(self.weight, self.partition_dim)

    @classmethod
    def from_full(cls, linear: nn.Linear, group) -> ColumnParallelLinear:
        if linear.bias is not None:
            raise ValueError("ColumnParallelLinear.from_full: biased projections are not supported")
        layer = cls(linear.in_features, linear.out_features, group, device=linear.weight.device,
                    dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(_shard(linear.weight, cls.partition_dim, group))
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out/tp]
        return F.linear(copy_to_tensor_parallel_region(x, self.group), self.weight)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, local_out={self.weight.shape[0]}"


class RowParallelLinear(nn.Module):
    partition_dim = 1

    def __init__(self, in_features: int, out_features: int, group, device=None, dtype=None):
        super().__init__()
        world = dist.get_world_size(group)
        if in_features % world:
            raise ValueError(f"RowParallelLinear: in_features={in_features} is not divisible by the "
                             f"tensor-parallel size {world}")
        self.in_features, self.out_features = in_features, out_features
        self.group = group
        self.weight = nn.Parameter(torch.empty(out_features, in_features // world, device=device,
                                               dtype=dtype))
        mark_tensor_parallel(self.weight, self.partition_dim)

    @classmethod
    def from_full(cls, linear: nn.Linear, group) -> RowParallelLinear:
        if linear.bias is not None:
            raise ValueError("RowParallelLinear.from_full: biased projections are not supported")
        layer = cls(linear.in_features, linear.out_features, group, device=linear.weight.device,
                    dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(_shard(linear.weight, cls.partition_dim, group))
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [..., in/tp] (a column-parallel output) -> [..., out]
        return reduce_from_tensor_parallel_region(F.linear(x, self.weight), self.group)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, local_in={self.weight.shape[1]}"
