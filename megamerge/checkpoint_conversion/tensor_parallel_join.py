"""Join tensor-parallel shards into full tensors.

Which parameters are split, and along which dimension, comes from megamerge.parallel's table
(`tensor_parallel_plan.split_parameter_dims`), the same one `apply_tensor_parallel` cut them by:
column-parallel weights are concatenated along dim 0, row-parallel ones along dim 1, in TP-rank
order; replicated weights are taken once, from TP rank 0. Every shard must have exactly the shape
that table and the checkpoint's model_config give, so a checkpoint from another split (or a
config that does not match its tensors) is refused instead of being joined into wrong weights.
"""

from __future__ import annotations

import torch

from .errors import ConversionError


def expected_shard_shape(full_shape: tuple, dim: int | None, tp: int) -> tuple:
    if dim is None:
        return full_shape
    return tuple(size // tp if d == dim else size for d, size in enumerate(full_shape))


def join_tensor_parallel(shards: list[dict[str, torch.Tensor]], full_shapes: dict[str, tuple],
                         split_dims: dict[str, int], where: str) -> dict[str, torch.Tensor]:
    """Full tensors from the TP ranks' dicts (rank order). `full_shapes`: {name: shape} of the
    unsplit model; `split_dims`: {name: dim} of its split parameters (the rest are replicated)."""
    tp = len(shards)
    names = set(shards[0])
    for rank, shard in enumerate(shards[1:], 1):
        if set(shard) != names:
            raise ConversionError(f"{where}: TP rank {rank} holds different parameters than TP rank 0")
    full = {}
    for name in sorted(names):
        if name not in full_shapes:
            raise ConversionError(f"{where}: {name!r} is not a parameter of a model with the checkpoint's "
                                  "model_config: the config does not match the tensors")
        dim = split_dims.get(name) if tp > 1 else None
        if dim is not None and full_shapes[name][dim] % tp:
            raise ConversionError(f"{where}: {name!r} of shape {list(full_shapes[name])} cannot be split "
                                  f"{tp} ways along dim {dim}: the config does not match the tensors")
        expected = expected_shard_shape(tuple(full_shapes[name]), dim, tp)
        for rank, shard in enumerate(shards):
            if tuple(shard[name].shape) != expected:
                kind = "replicated" if dim is None else f"split along dim {dim} over TP={tp}"
                raise ConversionError(f"{where}: {name!r} on TP rank {rank} has shape "
                                      f"{list(shard[name].shape)}, but it is {kind}, so the checkpoint's "
                                      f"model_config gives {list(expected)}: "
                                      "the config does not match the tensors")
        if dim is None:
            full[name] = shards[0][name]
        else:
            full[name] = torch.cat([shard[name] for shard in shards], dim=dim)
    return full
