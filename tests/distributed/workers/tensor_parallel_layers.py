"""Run on 2 ranks by tests/distributed/test_parallel_layers.py: megamerge/parallel/mappings.py and
layers.py checked directly, Megatron style. Each check computes on every rank what the mapping or
layer should give (from tensors every rank can rebuild, seeded by rank) and records the largest
difference; rank 0 writes {check: max abs difference} (or a bool) to a JSON file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from megamerge.parallel.layers import ColumnParallelLinear, RowParallelLinear
from megamerge.parallel.mappings import copy_to_tensor_parallel_region, reduce_from_tensor_parallel_region

IN, HIDDEN, OUT = 6, 8, 5


def _per_rank(rank: int, *shape: int) -> torch.Tensor:
    """A tensor every rank can rebuild for any rank (so each can compute the all-reduce by hand)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(100 + rank), dtype=torch.float64)


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def check_copy(rank: int, world: int, group) -> dict:
    """copy: forward identity; backward all-reduce of the ranks' output gradients."""
    x = _per_rank(0, 3, IN).requires_grad_()  # the replicated input a column-parallel layer receives
    y = copy_to_tensor_parallel_region(x, group)
    y.backward(_per_rank(rank, 3, IN))
    expected_grad = sum(_per_rank(r, 3, IN) for r in range(world))
    return {"copy_forward": _diff(y, x), "copy_backward": _diff(x.grad, expected_grad)}


def check_reduce(rank: int, world: int, group) -> dict:
    """reduce: forward all-reduce of the ranks' partial outputs (input left untouched); backward identity."""
    x = _per_rank(rank, 3, OUT).requires_grad_()
    before = x.detach().clone()
    y = reduce_from_tensor_parallel_region(x, group)
    grad = _per_rank(0, 3, OUT)  # the gradient of the (replicated) output, the same on every rank
    y.backward(grad)
    return {"reduce_forward": _diff(y, sum(_per_rank(r, 3, OUT) for r in range(world))),
            "reduce_leaves_input": _diff(x.detach(), before), "reduce_backward": _diff(x.grad, grad)}


def check_single_rank_group(rank: int) -> dict:
    """A group of one: both mappings are the identity, forward and backward."""
    groups = [dist.new_group([r]) for r in range(dist.get_world_size())]  # collective: every rank makes all
    own = groups[rank]
    x = _per_rank(rank, 4).requires_grad_()
    y = reduce_from_tensor_parallel_region(copy_to_tensor_parallel_region(x, own), own)
    y.backward(torch.ones_like(y))
    return {"single_rank_forward": _diff(y, x), "single_rank_backward": _diff(x.grad, torch.ones_like(x))}


def check_column_then_row(rank: int, world: int, group) -> dict:
    """ColumnParallelLinear -> elementwise nonlinearity -> RowParallelLinear equals the unsplit pair,
    forward, input gradient and (each rank's slice of) weight gradients; from_full keeps the slice."""
    torch.manual_seed(0)  # the same full layers on every rank
    first, second = nn.Linear(IN, HIDDEN, bias=False).double(), nn.Linear(HIDDEN, OUT, bias=False).double()
    column, row = ColumnParallelLinear.from_full(first, group), RowParallelLinear.from_full(second, group)
    rows = slice(rank * HIDDEN // world, (rank + 1) * HIDDEN // world)
    out = {"column_shard": _diff(column.weight, first.weight[rows]),
           "row_shard": _diff(row.weight, second.weight[:, rows]),
           "column_weight_flagged": bool(column.weight.tensor_model_parallel
                                         and column.weight.partition_dim == 0),
           "row_weight_flagged": bool(row.weight.tensor_model_parallel and row.weight.partition_dim == 1)}

    x_ref = _per_rank(0, 2, 3, IN).requires_grad_()  # [B, T, IN], replicated
    x = x_ref.detach().clone().requires_grad_()
    grad = _per_rank(1, 2, 3, OUT)
    y_ref = second(F.gelu(first(x_ref)))
    y = row(F.gelu(column(x)))
    y_ref.backward(grad)
    y.backward(grad)
    out.update({"pair_forward": _diff(y, y_ref), "pair_input_grad": _diff(x.grad, x_ref.grad),
                "pair_column_weight_grad": _diff(column.weight.grad, first.weight.grad[rows]),
                "pair_row_weight_grad": _diff(row.weight.grad, second.weight.grad[:, rows]),
                "pair_output_magnitude": float(y_ref.abs().max())})
    return out


def check_refusals(group) -> dict:
    """Sizes the split cannot divide, and biased projections, are refused."""
    refused = {}
    cases = {"column_odd_out": lambda: ColumnParallelLinear(IN, 7, group),
             "row_odd_in": lambda: RowParallelLinear(7, OUT, group),
             "column_bias": lambda: ColumnParallelLinear.from_full(nn.Linear(IN, HIDDEN), group),
             "row_bias": lambda: RowParallelLinear.from_full(nn.Linear(HIDDEN, OUT), group)}
    for name, build in cases.items():
        try:
            build()
            refused[name] = False
        except ValueError:
            refused[name] = True
    return refused


def worker(out_path: Path) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, world, group = dist.get_rank(), dist.get_world_size(), dist.group.WORLD
    results = {**check_copy(rank, world, group), **check_reduce(rank, world, group),
               **check_single_rank_group(rank), **check_column_then_row(rank, world, group),
               "refused": check_refusals(group), "world": world}
    gathered = [None] * world
    dist.all_gather_object(gathered, results)
    if rank == 0:
        out_path.write_text(json.dumps(gathered))
    dist.barrier()
    dist.destroy_process_group()  # as the other workers: no gloo thread left to abort the exit


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
