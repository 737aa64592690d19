"""Apply tensor parallelism to MergeDNA and CARMANIA from outside the model (torchtitan style).

What is split, and along which dimension, is the table in `tensor_parallel_plan.py` (shared with
the checkpoint converter): in MergeDNA's latent blocks and every CARMANIA layer, wq / wk / wv and
the SwiGLU gate w1 and up w3 become column-parallel (each rank keeps n_heads / tp whole heads;
`Attention` reads the head count off the projection shape), wo and w2 row-parallel. Everything
else stays whole and replicated and carries no model-parallel flag, so ZeRO counts its gradient
norm once.

Every sharded weight is cut from the full master weight the unsplit model was initialised
with, so TP=2 starts from exactly the weights of TP=1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from megamerge.models.common.block import TransformerBlock

from .tensor_parallel_plan import BLOCK_LINEAR_SPLITS, split_blocks


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
        raise TensorParallelSizeError(f"--tensor-model-parallel-size {tp} must divide "
                                      f"{' and '.join(problems)}; pick a TP degree that divides them or "
                                      "change the model dimensions")


def parallelize_block(block: TransformerBlock, group) -> None:
    """Replace the block's linear layers by their parallel versions, as BLOCK_LINEAR_SPLITS says."""
    for path, parallel_class in BLOCK_LINEAR_SPLITS.items():
        parent_name, attribute = path.split(".")
        parent = getattr(block, parent_name)
        setattr(parent, attribute, parallel_class.from_full(getattr(parent, attribute), group))


def apply_tensor_parallel(model: nn.Module, group) -> int:
    """Split, in place across `group`, the blocks `split_blocks` names (MergeDNA's latent blocks,
    CARMANIA's layers). The model is built identically on every rank. Returns the number of blocks
    split."""
    tp = dist.get_world_size(group)
    cfg = model.cfg
    check_tensor_parallel_sizes(cfg.n_heads, cfg.ffn_dim, tp, getattr(cfg, "n_kv_heads", None))
    blocks = split_blocks(model)
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
