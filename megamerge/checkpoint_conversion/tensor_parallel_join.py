"""Join tensor-parallel shards into full tensors.

Which dimension a parameter is split along is read off the shapes: a replicated parameter has its
full shape on every TP rank; a sharded one is smaller in exactly one dimension, by the TP degree
(ColumnParallelLinear: dim 0, the output features; RowParallelLinear: dim 1, the input
features). Rank order along that dimension is TP rank order, as in `layers._shard`. Deriving it
from shapes keeps the converter correct if more layers are split later; the checks below refuse
anything that is not a clean split.
"""

from __future__ import annotations

import torch

from megamerge.parallel.tensor_parallel import TENSOR_PARALLEL_PARTS

from .errors import ConversionError


def split_dim(name: str, shard_shape: tuple, full_shape: tuple, tp: int) -> int | None:
    """None for a replicated parameter, else the dimension it is split along."""
    if shard_shape == full_shape:
        return None
    differing = [d for d, (s, f) in enumerate(zip(shard_shape, full_shape)) if s != f]
    if len(shard_shape) != len(full_shape) or len(differing) != 1 or shard_shape[differing[0]] * tp != full_shape[differing[0]]:
        raise ConversionError(f"{name}: shard shape {list(shard_shape)} is not a 1/{tp} split of the config's shape "
                              f"{list(full_shape)}: the config does not match the tensors")
    return differing[0]


def join_tensor_parallel(shards: list[dict[str, torch.Tensor]], full_shapes: dict[str, tuple], where: str
                         ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Full tensors from the TP ranks' dicts (rank order) and {name: split dim} of the sharded ones."""
    tp = len(shards)
    names = set(shards[0])
    for rank, shard in enumerate(shards[1:], 1):
        if set(shard) != names:
            raise ConversionError(f"{where}: TP rank {rank} holds different parameters than TP rank 0")
    full, dims = {}, {}
    for name in sorted(names):
        if name not in full_shapes:
            raise ConversionError(f"{where}: {name!r} is not a parameter of a MergeDNA with the checkpoint's "
                                  "model_config: the config does not match the tensors")
        parts = [shard[name] for shard in shards]
        if any(p.shape != parts[0].shape for p in parts):
            raise ConversionError(f"{where}: {name!r} has different shapes on different TP ranks")
        dim = split_dim(name, tuple(parts[0].shape), tuple(full_shapes[name]), tp)
        if dim is None:
            full[name] = parts[0]  # replicated: taken once, from TP rank 0
            continue
        if not name.startswith(tuple(p + "." for p in TENSOR_PARALLEL_PARTS)):
            raise ConversionError(f"{where}: {name!r} is split across TP ranks, but megamerge only splits the "
                                  f"{' and '.join(TENSOR_PARALLEL_PARTS)} blocks")
        full[name] = torch.cat(parts, dim=dim)
        dims[name] = dim
    return full, dims
