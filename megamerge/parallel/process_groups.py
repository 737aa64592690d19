"""TP x PP x DP process groups with Megatron's rank ordering.

Global rank = (pp_rank * dp + dp_rank) * tp + tp_rank: tensor-parallel ranks are adjacent (they
talk every layer, so they should share a node's NVLink), then data parallel, then pipeline
outermost. This is the order of DeepSpeed's `PipeModelDataParallelTopology` (axes pipe, data,
model), so the pipeline engine's grid and these groups agree rank for rank.

Every rank must call `initialize_model_parallel` with the same sizes: `new_group` is collective
and groups are created in the same order everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist


class ParallelLayoutError(ValueError):
    pass


def data_parallel_size(world_size: int, tp: int, pp: int) -> int:
    """DP = world / (TP x PP); raises before any process group exists when the sizes cannot tile
    the world."""
    if tp < 1 or pp < 1:
        raise ParallelLayoutError(f"tensor ({tp}) and pipeline ({pp}) parallel sizes must be >= 1")
    if world_size % (tp * pp):
        raise ParallelLayoutError(f"world size {world_size} is not divisible by TP x PP = {tp} x {pp}; "
                                  f"launch a multiple of {tp * pp} processes or change the parallel sizes")
    return world_size // (tp * pp)


def rank_of(tp_rank: int, dp_rank: int, pp_rank: int, tp: int, dp: int) -> int:
    return (pp_rank * dp + dp_rank) * tp + tp_rank


@dataclass
class ParallelState:
    tp: int
    pp: int
    dp: int
    tp_rank: int
    pp_rank: int
    dp_rank: int
    tp_group: object
    pp_group: object
    dp_group: object
    model_parallel_group: object  # TP x PP ranks of one data-parallel replica
    tp_ranks: list[int]
    pp_ranks: list[int]
    dp_ranks: list[int]

    @property
    def model_parallel_rank(self) -> int:
        return self.pp_rank * self.tp + self.tp_rank


def initialize_model_parallel(tp: int = 1, pp: int = 1) -> ParallelState:
    world, rank = dist.get_world_size(), dist.get_rank()
    dp = data_parallel_size(world, tp, pp)
    tp_rank, rest = rank % tp, rank // tp
    dp_rank, pp_rank = rest % dp, rest // dp

    def build(rank_lists: list[list[int]]):
        mine = None
        for ranks in rank_lists:
            group = dist.new_group(ranks)  # collective: every rank creates every group
            if rank in ranks:
                mine = (group, ranks)
        return mine

    tp_group, tp_ranks = build([[rank_of(t, d, p, tp, dp) for t in range(tp)]
                                for p in range(pp) for d in range(dp)])
    dp_group, dp_ranks = build([[rank_of(t, d, p, tp, dp) for d in range(dp)]
                                for p in range(pp) for t in range(tp)])
    pp_group, pp_ranks = build([[rank_of(t, d, p, tp, dp) for p in range(pp)]
                                for d in range(dp) for t in range(tp)])
    mp_group, _ = build([[rank_of(t, d, p, tp, dp) for p in range(pp) for t in range(tp)]
                         for d in range(dp)])
    return ParallelState(tp, pp, dp, tp_rank, pp_rank, dp_rank, tp_group, pp_group, dp_group, mp_group,
                         tp_ranks, pp_ranks, dp_ranks)
