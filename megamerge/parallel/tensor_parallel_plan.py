"""Which parameters tensor parallelism splits, and along which dimension.

This is the one table read both by `apply_tensor_parallel` (cutting each rank's shard from the
full weight) and by the checkpoint converter (joining the shards back, or refusing a checkpoint
whose shards do not follow it), so the two cannot disagree.

Split blocks: those the family's registry spec names (`ModelSpec.tensor_parallel_blocks`: every
block of MergeDNA's Latent Encoder and Latent Decoder; every CARMANIA layer). Inside each of them:

    column-parallel, split along dim 0 (output features; whole heads per rank):
        attention.wq, attention.wk, attention.wv, feed_forward.w1 (gate), feed_forward.w3 (up)
    row-parallel, split along dim 1 (input features; partial sums all-reduced):
        attention.wo, feed_forward.w2 (down)

Every other parameter (embeddings, norms, merge scorers, the local encoder and decoder, heads)
is replicated: the full tensor on every TP rank. Shard r is slice r of TP equal slices along the
split dimension, in TP-rank order (`layers._shard`).
"""

from __future__ import annotations

from torch import nn

from megamerge.models.common.block import TransformerBlock
from megamerge.models.registry import family_of_model

from .layers import ColumnParallelLinear, RowParallelLinear

# Linear layer inside a TransformerBlock -> the parallel layer that replaces it. The split
# dimension is the class's `partition_dim` (column 0, row 1).
BLOCK_LINEAR_SPLITS: dict[str, type[ColumnParallelLinear | RowParallelLinear]] = {
    "attention.wq": ColumnParallelLinear,
    "attention.wk": ColumnParallelLinear,
    "attention.wv": ColumnParallelLinear,
    "attention.wo": RowParallelLinear,
    "feed_forward.w1": ColumnParallelLinear,
    "feed_forward.w3": ColumnParallelLinear,
    "feed_forward.w2": RowParallelLinear,
}



def split_blocks(model: nn.Module) -> list[TransformerBlock]:
    """The blocks of `model` (any family, unwrapped) that tensor parallelism splits."""
    return list(family_of_model(model).tensor_parallel_blocks(model))


def split_parameter_dims(model: nn.Module) -> dict[str, int]:
    """{name in model.state_dict(): split dimension} of every TP-split parameter of the full
    (unsplit) `model`, which may live on the meta device; every name not listed is replicated."""
    block_names = {id(module): name for name, module in model.named_modules()}
    dims = {}
    for block in split_blocks(model):
        prefix = block_names[id(block)]
        for linear, parallel_class in BLOCK_LINEAR_SPLITS.items():
            dims[f"{prefix}.{linear}.weight"] = parallel_class.partition_dim
    return dims
