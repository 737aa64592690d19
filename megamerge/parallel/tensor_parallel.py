"""Apply tensor parallelism to MergeDNA from outside the model (torchtitan style).

Only the latent Transformer is split: in every block of the Latent Encoder and Latent Decoder,
wq / wk / wv become column-parallel (each rank keeps n_heads / tp whole heads; `Attention` reads
the head count off the projection shape), wo row-parallel, and the SwiGLU gate w1 and up w3
column-parallel with w2 row-parallel. The Local Encoder and Local Decoder, the norms, the merge
scorers and the head stay whole and replicated, and carry no model-parallel flag, so ZeRO
counts their gradient norm once.

Every sharded weight is cut from the full master weight the unsplit model was initialised
with, so TP=2 starts from exactly the weights of TP=1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from megamerge.model.block import TransformerBlock

from .layers import ColumnParallelLinear, RowParallelLinear

TENSOR_PARALLEL_PARTS = ("latent_encoder", "latent_decoder")


class TensorParallelSizeError(ValueError):
    pass


def check_tensor_parallel_sizes(n_heads: int, ffn_dim: int, tp: int, n_kv_heads: int | None = None) -> None:
    """Raise before any process group is created when heads or the FFN width cannot be split."""
    problems = []
    if n_heads % tp:
        problems.append(f"the number of attention heads ({n_heads})")
    if n_kv_heads is not None and n_kv_heads % tp:
        problems.append(f"the number of key/value heads ({n_kv_heads})")
    if ffn_dim % tp:
        problems.append(f"the FFN width ({ffn_dim})")
    if problems:
        raise TensorParallelSizeError(f"--tensor-model-parallel-size {tp} must divide {' and '.join(problems)}; "
                                      "pick a TP degree that divides them or change the model dimensions")


def parallelize_block(block: TransformerBlock, group) -> None:
    attn, mlp = block.attention, block.feed_forward
    for name in ("wq", "wk", "wv"):
        setattr(attn, name, ColumnParallelLinear.from_full(getattr(attn, name), group))
    attn.wo = RowParallelLinear.from_full(attn.wo, group)
    mlp.w1 = ColumnParallelLinear.from_full(mlp.w1, group)
    mlp.w3 = ColumnParallelLinear.from_full(mlp.w3, group)
    mlp.w2 = RowParallelLinear.from_full(mlp.w2, group)


def latent_blocks(model: nn.Module) -> list[TransformerBlock]:
    return [block for part in TENSOR_PARALLEL_PARTS for block in getattr(model, part).blocks]


def apply_tensor_parallel(model: nn.Module, group) -> int:
    """Split, in place across `group`, the blocks a model exposes for tensor parallelism (its
    `tensor_parallel_blocks()`, e.g. CARMANIA's decoder layers) or else MergeDNA's latent blocks.
    The model is built identically on every rank. Returns the number of blocks split."""
    tp = dist.get_world_size(group)
    cfg = model.cfg
    check_tensor_parallel_sizes(cfg.n_heads, cfg.ffn_dim, tp, getattr(cfg, "n_kv_heads", None))
    blocks = model.tensor_parallel_blocks() if hasattr(model, "tensor_parallel_blocks") else latent_blocks(model)
    if tp == 1:
        return 0
    for block in blocks:
        parallelize_block(block, group)
    return len(blocks)


def is_tensor_parallel(param: torch.Tensor) -> bool:
    return bool(getattr(param, "tensor_model_parallel", False))


@torch.no_grad()
def gather_full(tensor: torch.Tensor, param: torch.Tensor, group) -> torch.Tensor:
    """The full tensor (a weight or its gradient) of `param` from its TP shards; replicated
    parameters are returned as they are."""
    if not is_tensor_parallel(param):
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=param.partition_dim)
