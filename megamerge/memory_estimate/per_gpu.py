"""Per-GPU memory of a MergeDNA pre-training layout: parameters, gradients, optimizer state and
activations, with and without activation checkpointing (the numbers tools/estimate_memory.py prints).

Model states follow the ZeRO paper's accounting for mixed precision with Adam: 2 bytes of bf16
weights and 2 of gradients per parameter, plus 12 bytes of optimizer state (fp32 master weight,
Adam m and v). ZeRO-1 divides the optimizer state by the data-parallel size, ZeRO-2 the gradients
as well. fp32 (CPU) counts 4-byte weights and gradients and, with ZeRO-0, the plain torch AdamW
state (m, v: 8 bytes) without a master copy.

Parameters per GPU are counted exactly on a meta-device model: the parameters named by the TP split
table (megamerge/parallel/tensor_parallel_plan.py) are divided by TP, everything else is replicated;
with PP the pipeline layers are balanced by parameter count as DeepSpeed does and the heaviest stage
is reported. Under PP, stage s holds PP - s micro-batches in flight (1F1B), and the activation
estimate (activations.py) takes the heaviest stage's layers.

Sequence parallelism (DeepSpeed-Ulysses, SP = S): the S ranks of a group read the same samples and
each keeps the full parameters; ZeRO partitions gradients and optimizer state over the
sequence-data-parallel group of DP x S ranks. World = DP x S; SP composes with DP and ZeRO only
(TP or PP > 1 with S > 1 is refused). Activations: activations.py.
"""

from __future__ import annotations

import torch

from megamerge.memory_estimate.activations import Kernels, activation_estimate
from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.mergedna.pipeline_layers import pipeline_layers
from megamerge.parallel.process_groups import check_sequence_parallel_layout
from megamerge.parallel.sequence_parallel import check_sequence_parallel_sizes
from megamerge.parallel.tensor_parallel_plan import split_parameter_dims

_LAYER_PARAMS: dict[tuple[str, int], list[int]] = {}  # (repr(cfg), tp) -> counts: built once per sweep


def pipeline_layer_params(cfg: MergeDNAConfig, tp: int) -> list[int]:
    """Parameters per GPU of each pipeline layer, in the order of mergedna/pipeline_layers.py."""
    key = (repr(cfg), tp)
    if key not in _LAYER_PARAMS:
        _LAYER_PARAMS[key] = _count_layer_params(cfg, tp)
    return list(_LAYER_PARAMS[key])


def _count_layer_params(cfg: MergeDNAConfig, tp: int) -> list[int]:
    with torch.device("meta"):
        model = MergeDNA(cfg)
    split = split_parameter_dims(model)  # the names tensor parallelism divides by TP

    def count(path: str) -> int:
        return sum(p.numel() // (tp if f"{path}.{name}" in split else 1)
                   for name, p in model.get_submodule(path).named_parameters())

    return [count(layer.submodule) for layer in pipeline_layers(cfg)]


def balanced_parts(weights: list[int], parts: int) -> list[int]:
    from deepspeed.runtime.utils import partition_balanced

    return partition_balanced(weights=weights, num_parts=parts)


def stage_layout(cfg: MergeDNAConfig, tp: int, pp: int) -> tuple[int, dict[str, float], int]:
    """The pipeline stage holding the most parameters: (its parameters per GPU, the fraction of
    each pipeline layer kind it holds, its index)."""
    layers = pipeline_layer_params(cfg, tp)
    parts = balanced_parts(layers, pp) if pp > 1 else [0, len(layers)]
    kinds = [layer.kind for layer in pipeline_layers(cfg)]  # the activation sites' stage_layer names
    of_kind = {kind: kinds.count(kind) for kind in kinds}
    stages = []
    for s in range(pp):
        idx = range(parts[s], parts[s + 1])
        share = {}
        for i in idx:
            share[kinds[i]] = share.get(kinds[i], 0.0) + 1.0 / of_kind[kinds[i]]
        stages.append((sum(layers[i] for i in idx), share, s))
    return max(stages, key=lambda t: t[0])


def check_sequence_parallel(cfg: MergeDNAConfig, tp: int, pp: int, sp: int) -> None:
    """The layouts sequence parallelism supports, by train.py's own rules; ValueError otherwise."""
    check_sequence_parallel_layout(tp, pp, sp)
    check_sequence_parallel_sizes(cfg.n_heads, sp, getattr(cfg, "n_kv_heads", None))


def estimate(cfg: MergeDNAConfig, tp: int, pp: int, dp: int, zero: int, micro: int, seq: int,
             dtype: str = "bf16", device: str = "gpu", sp: int = 1) -> dict:
    check_sequence_parallel(cfg, tp, pp, sp)
    psi, share, stage = stage_layout(cfg, tp, pp)
    nbytes = 2 if dtype == "bf16" else 4
    zero_ranks = dp * sp  # ZeRO partitions over the sequence-data-parallel group
    params = psi * nbytes
    grads = psi * nbytes / (zero_ranks if zero >= 2 else 1)
    if dtype == "bf16":
        optim = psi * 12 / (zero_ranks if zero >= 1 else 1)
    else:  # fp32: DeepSpeed ZeRO keeps an fp32 partition besides the weights; plain torch AdamW does not
        optim = psi * (12 if zero >= 1 else 8) / (zero_ranks if zero >= 1 else 1)
    in_flight = pp - stage if pp > 1 else 1  # 1F1B: stage s holds pp - s micro-batches
    kernels = Kernels(device, nbytes)
    act = {ckpt: activation_estimate(cfg, micro, seq, tp, kernels, ckpt, share if pp > 1 else None, in_flight,
                                     sp=sp)
           for ckpt in (False, True)}
    return {"params_per_gpu": psi, "stage": stage, "parameters": params, "gradients": grads,
            "optimizer": optim, "activations": act[False], "activations_checkpointed": act[True]}
