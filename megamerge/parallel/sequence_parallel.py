"""Sequence parallelism (DeepSpeed-Ulysses) for long samples, applied from outside the model.

The S ranks of a sequence-parallel group read the same samples. Every TransformerBlock (Local
Encoder, Latent Encoder, Latent Decoder and Local Decoder blocks alike) runs on 1/S of the
sequence; everything between blocks (embedding, token merging, the latent ToMe merge, unmerging,
the head, losses, AMTM masking) runs on the whole sequence on every rank of the group. That glue
holds a few tensors of [B, T, D] per layer; the blocks' attention, FFN and norms, which keep an
order of magnitude more for the backward pass, hold 1/S of theirs.

* Layout. A block pads its token width T to a multiple of S (padding tokens are invalid keys)
  and rank r takes tokens [r T/S, (r + 1) T/S) of every row. Rows are ragged (L_b differs per
  sample, and padding is a suffix), so a rank may hold fewer valid tokens of a short sample, or
  none; what is valid travels with the full `valid` mask, never a per-shard count.
* Local-window blocks take a halo of max(left, right) tokens on each side of their slice, from
  the whole-sequence input every rank already has: each query of the slice sees exactly the keys
  it sees unsplit. Halo outputs are dropped.
* Full-attention blocks (the latent ones) exchange q, k and v with DeepSpeed's
  `DistributedAttention` (an all-to-all from sequence shards to head shards), so each rank runs
  megamerge's own `full_attention` over the whole sequence for n_heads / S heads: RoPE positions,
  key padding and the size-proportional key bias stay global, and no attention mask appears.
* The block's output is all-gathered back to the whole sequence.
* With --compile, each block is compiled before it is split: the slicing and the all-gather stay
  outside the compiled forward, and the all-to-all inside it runs eager (`UlyssesAttention`).

Merges are taken on the whole sequence, identically on every rank, so S = 2 makes the same merge
decisions as S = 1 (the local merges' windows follow compacted token indices and would cross any
fixed shard boundary; pass 2's ToMe merge compares every pair of tokens).

Gradients follow DeepSpeed's convention for sequence parallelism: ZeRO sums them over the group
(and averages over data parallelism). The loss is scaled by 1/S for the backward pass
(`backward_scale`), so each rank's replicated glue holds 1/S of its true gradient; a block's
output gradient is scaled back up by S as it enters the block (`_LeaveBlock`), so a block's
parameters get the true gradient of their own slice, and its input gradient is summed over the
group (halos included) and divided by S again (`_EnterBlock`). Summed over the group, every
parameter's gradient is the unsplit one.
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from megamerge.models.common.block import TransformerBlock
from megamerge.models.common.full_attention import full_attention


def check_sequence_parallel_sizes(n_heads: int, sp: int, n_kv_heads: int | None = None) -> None:
    """Ulysses gives each rank whole heads: S must divide the (key/value) head count."""
    for name, count in (("attention heads", n_heads), ("key/value heads", n_kv_heads)):
        if count is not None and count % sp:
            raise ValueError(f"--sequence-parallel-size {sp} must divide the number of {name} ({count}): "
                             "Ulysses gives each rank whole heads")


class SequenceShards:
    """This rank's part of a sequence split over `group`."""

    def __init__(self, group):
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self._rope = None  # (the whole tables, first, last, their slice): see rope_slice

    def rope_slice(self, rope: tuple[torch.Tensor, torch.Tensor], width: int, first: int, last: int):
        """Tokens [first, last) of the RoPE tables (cos, signed sin [B, T, 1, hd]) padded to `width`, as
        copies, so that what a block saves holds only its slice. A module computes its tables once
        for all its blocks; the copy is made once too (the tables are held while they are the
        latest, so their identity cannot be reused)."""
        cached = self._rope
        if cached is None or cached[0][0] is not rope[0] or cached[0][1] is not rope[1] \
                or cached[1:3] != (first, last):
            part = tuple(_pad_tokens(t, width)[:, first:last].clone() for t in rope)
            self._rope = cached = (rope, first, last, part)
        return cached[3]

    def padded(self, length: int) -> int:
        return -(-length // self.size) * self.size

    def own(self, padded_length: int) -> tuple[int, int]:
        """[start, stop) of this rank's tokens in a sequence of `padded_length` (a multiple of S)."""
        n = padded_length // self.size
        return self.rank * n, (self.rank + 1) * n


class _EnterBlock(torch.autograd.Function):
    """forward: tokens [start, stop) of the whole-sequence x [B, T, D] (a copy, so that x can be
    freed); backward: the slice's gradient summed over the group and divided by S."""

    @staticmethod
    def forward(ctx, x, start: int, stop: int, shards: SequenceShards):
        ctx.start, ctx.stop, ctx.shape, ctx.shards = start, stop, x.shape, shards
        return x[:, start:stop].clone()

    @staticmethod
    def backward(ctx, grad):  # grad [B, stop - start, D]
        full = grad.new_zeros(ctx.shape)
        full[:, ctx.start:ctx.stop] = grad
        dist.all_reduce(full, group=ctx.shards.group)
        return full.div_(ctx.shards.size), None, None, None


class _LeaveBlock(torch.autograd.Function):
    """forward: this rank's own tokens [B, n, D] (rows [first, first + n) of the block's output
    y [B, E, D], which may carry halos) all-gathered into [B, S n, D]; backward: the own rows of
    the (replicated, 1/S) gradient times S, zero on the halos. Every rank computes that gradient
    from the same inputs with the same ops, so taking the own rows of its own copy needs no
    communication (GPU atomics may round the copies differently in the last bit: each block then
    sees one rounding or the other)."""

    @staticmethod
    def forward(ctx, y, first: int, n: int, shards: SequenceShards):
        ctx.first, ctx.n, ctx.shape, ctx.shards = first, n, y.shape, shards
        own = y[:, first:first + n].contiguous()
        parts = [torch.empty_like(own) for _ in range(shards.size)]
        dist.all_gather(parts, own, group=shards.group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad):  # grad [B, S n, D]
        shards, n = ctx.shards, ctx.n
        out = grad.new_zeros(ctx.shape)
        out[:, ctx.first:ctx.first + n] = grad[:, shards.rank * n:(shards.rank + 1) * n] * shards.size
        return out, None, None, None


class UlyssesAttention:
    """`full_attention` on sequence shards: q [B, H, n, hd], k and v [B, Hkv, n, hd] of this
    rank's n tokens -> [B, H, n, hd], through DeepSpeed's DistributedAttention (all-to-all to
    [B, S n, H / S, hd], attention over the whole sequence with the whole `key_valid` [B, S n]
    and `key_bias` [B, S n], all-to-all back)."""

    def __init__(self, group):
        import deepspeed
        from deepspeed.sequence.layer import DistributedAttention

        # DistributedAttention talks through deepspeed.comm, which wraps the process group that
        # torch.distributed already holds (deepspeed.initialize would do this later)
        deepspeed.init_distributed(dist_backend=dist.get_backend())
        self.attention = DistributedAttention(self._whole_sequence, group, scatter_idx=2, gather_idx=1)

    @staticmethod
    def _whole_sequence(q, k, v, key_valid, causal, key_bias, key_counts):  # [B, T, H/S, hd] each
        out = full_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), key_valid,
                             causal=causal, key_bias=key_bias, key_counts=key_counts)
        return out.transpose(1, 2)

    # Under --compile the all-to-all and the attention between them run eager: dynamo stops here,
    # and a block compiles into its parts before and after (DeepSpeed's comm layer is not traced).
    @torch.compiler.disable
    def __call__(self, q, k, v, key_valid, causal: bool = False, key_bias=None, key_counts=None):
        out = self.attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 0, None,
                             key_valid, causal, key_bias, key_counts)  # [B, n, H, hd]
        return out.transpose(1, 2)


def _pad_tokens(t: torch.Tensor | None, width: int, value=0) -> torch.Tensor | None:
    """t [B, T, ...] padded with `value` along dim 1 to `width`."""
    if t is None or t.shape[1] == width:
        return t
    pad = [0, 0] * (t.dim() - 2) + [0, width - t.shape[1]]
    return F.pad(t, pad, value=value)


def sharded_block_forward(forward, shards: SequenceShards, halo: int | None):
    """A TransformerBlock forward (x [B, T, D], rope (cos, signed sin [B, T, 1, hd]), valid [B, T],
    key_bias [B, T] or None, key_counts: valid's row sums on the host or None) -> [B, T, D] that
    runs `forward` on this rank's slice. `halo`: the tokens a local-window block needs on each
    side; None for a full-attention block, which sees the whole `valid`, `key_bias` and
    `key_counts` through UlyssesAttention."""

    @functools.wraps(forward)
    def run(x, rope, valid, key_bias=None, key_counts=None):
        T = x.shape[1]
        width = shards.padded(T)
        x, key_bias = _pad_tokens(x, width), _pad_tokens(key_bias, width)
        valid = _pad_tokens(valid, width, False)
        start, stop = shards.own(width)
        first, last = (start, stop) if halo is None else (max(start - halo, 0), min(stop + halo, width))
        y = forward(_EnterBlock.apply(x, first, last, shards), shards.rope_slice(rope, width, first, last),
                    valid if halo is None else valid[:, first:last], key_bias,
                    key_counts if halo is None else None)
        return _LeaveBlock.apply(y, start - first, stop - start, shards)[:, :T]

    return run


def apply_sequence_parallel(model: nn.Module, group) -> int:
    """Split every TransformerBlock of `model` over the sequence-parallel `group` (in place: the
    blocks' forwards are wrapped, parameter names do not change). Apply after --compile and
    activation checkpointing, so that the slicing and the all-gather stay outside what those wrap
    (the all-to-all inside a compiled block runs eager: UlyssesAttention). Returns the
    number of blocks split; none without a group (None: no sequence parallelism) or for a group
    of one."""
    if group is None:
        return 0
    shards = SequenceShards(group)
    check_sequence_parallel_sizes(model.cfg.n_heads, shards.size, getattr(model.cfg, "n_kv_heads", None))
    if shards.size == 1:
        return 0
    wrapped = 0
    for module in model.modules():
        if isinstance(module, TransformerBlock):
            window = module.attention.window
            if window is None:
                module.attention.global_attention = UlyssesAttention(group)
            halo = None if window is None else max(window)
            module.forward = sharded_block_forward(module.forward, shards, halo)
            wrapped += 1
    return wrapped


def backward_scale(sequence_parallel_size: int) -> float:
    """What the training loss is multiplied by for the backward pass (module docstring)."""
    return 1.0 / sequence_parallel_size
