"""TP x SP x DP x PP process groups with Megatron's rank ordering.

Global rank = ((pp_rank * dp + dp_rank) * sp + sp_rank) * tp + tp_rank: tensor-parallel ranks are
adjacent (they talk every layer, so they should share a node's NVLink), then sequence parallel
(Ulysses' all-to-all, every latent layer), then data parallel, then pipeline outermost. With
sp = 1 this is the order of DeepSpeed's `PipeModelDataParallelTopology` (axes pipe, data, model),
so the pipeline engine's grid and these groups agree rank for rank. Sequence parallelism composes
with data parallelism only (`check_sequence_parallel_layout`).

Every rank must call `initialize_model_parallel` with the same sizes: `new_group` is collective
and groups are created in the same order everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist


class ParallelLayoutError(ValueError):
    pass


def check_sequence_parallel_layout(tp: int, pp: int, sp: int) -> None:
    """Sequence parallelism is built for data parallelism and ZeRO: with TP or PP it is refused
    (their blocks would need a second split of the heads, their stages a sharded carry)."""
    if sp < 1:
        raise ParallelLayoutError(f"--sequence-parallel-size must be >= 1, got {sp}")
    if sp > 1 and (tp > 1 or pp > 1):
        raise ParallelLayoutError(f"--sequence-parallel-size {sp} composes with data parallelism and ZeRO "
                                  f"only, not with --tensor-model-parallel-size {tp} / "
                                  f"--pipeline-model-parallel-size {pp}; set those to 1")


def data_parallel_size(world_size: int, tp: int, pp: int, sp: int = 1) -> int:
    """DP = world / (TP x PP x SP); raises before any process group exists when the sizes cannot
    tile the world."""
    if tp < 1 or pp < 1:
        raise ParallelLayoutError(f"tensor ({tp}) and pipeline ({pp}) parallel sizes must be >= 1")
    check_sequence_parallel_layout(tp, pp, sp)
    replica = tp * pp * sp
    if world_size % replica:
        sizes = f"TP x PP = {tp} x {pp}" if sp == 1 else f"SP = {sp}"
        raise ParallelLayoutError(f"world size {world_size} is not divisible by {sizes}; "
                                  f"launch a multiple of {replica} processes or change the parallel sizes")
    return world_size // replica


def rank_of(tp_rank: int, dp_rank: int, pp_rank: int, tp: int, dp: int,
            sp_rank: int = 0, sp: int = 1) -> int:
    return ((pp_rank * dp + dp_rank) * sp + sp_rank) * tp + tp_rank


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
    sp: int = 1
    sp_rank: int = 0
    sp_group: object = None  # the ranks that split one sample's sequence
    seq_dp_group: object = None  # DP x SP: gradient reduction and ZeRO partitions under SP
    seq_dp_rank: int = 0

    @property
    def model_parallel_rank(self) -> int:
        return self.pp_rank * self.tp + self.tp_rank


def initialize_model_parallel(tp: int = 1, pp: int = 1, sp: int = 1) -> ParallelState:
    world, rank = dist.get_world_size(), dist.get_rank()
    dp = data_parallel_size(world, tp, pp, sp)
    tp_rank, rest = rank % tp, rank // tp
    sp_rank, rest = rest % sp, rest // sp
    dp_rank, pp_rank = rest % dp, rest // dp

    def at(t: int, d: int, p: int, s: int) -> int:
        return rank_of(t, d, p, tp, dp, s, sp)

    def build(rank_lists: list[list[int]]):
        mine = None
        for ranks in rank_lists:
            group = dist.new_group(ranks)  # collective: every rank creates every group
            if rank in ranks:
                mine = (group, ranks)
        return mine

    sps = range(sp)
    tp_group, tp_ranks = build([[at(t, d, p, s) for t in range(tp)]
                                for p in range(pp) for d in range(dp) for s in sps])
    dp_group, dp_ranks = build([[at(t, d, p, s) for d in range(dp)]
                                for p in range(pp) for t in range(tp) for s in sps])
    pp_group, pp_ranks = build([[at(t, d, p, s) for p in range(pp)]
                                for d in range(dp) for t in range(tp) for s in sps])
    mp_group, _ = build([[at(t, d, p, s) for p in range(pp) for t in range(tp)]
                         for d in range(dp) for s in sps])
    if sp == 1:  # no sequence split: the DP group reduces gradients, as before
        return ParallelState(tp, pp, dp, tp_rank, pp_rank, dp_rank, tp_group, pp_group, dp_group, mp_group,
                             tp_ranks, pp_ranks, dp_ranks, seq_dp_group=dp_group, seq_dp_rank=dp_rank)
    sp_group, _ = build([[at(t, d, p, s) for s in sps]
                         for p in range(pp) for d in range(dp) for t in range(tp)])
    seq_dp_group, seq_dp_ranks = build([[at(t, d, p, s) for d in range(dp) for s in sps]
                                        for p in range(pp) for t in range(tp)])
    return ParallelState(tp, pp, dp, tp_rank, pp_rank, dp_rank, tp_group, pp_group, dp_group, mp_group,
                         tp_ranks, pp_ranks, dp_ranks, sp, sp_rank, sp_group, seq_dp_group,
                         seq_dp_ranks.index(rank))
