"""The memory model of MergeDNA pre-training: what a layout (TP, PP, SP, DP, ZeRO, micro-batch,
sequence length, dtype, GPU or CPU kernels) costs per GPU.

    per_gpu.py      parameters, gradients and optimizer state of the heaviest pipeline stage, and `estimate`
    activations.py  the tensors autograd keeps for backward, site by site, and the backward peak

tools/estimate_memory.py is its command line; benchmarks/bench_memory.py and
tests/unit/test_estimate_memory.py check it against measured runs and a saved-tensor census.
"""

from megamerge.memory_estimate.activations import ActivationEstimate, Kernels, activation_estimate
from megamerge.memory_estimate.per_gpu import (
    check_sequence_parallel,
    estimate,
    pipeline_layer_params,
    stage_layout,
)

__all__ = ["ActivationEstimate", "Kernels", "activation_estimate", "check_sequence_parallel", "estimate",
           "pipeline_layer_params", "stage_layout"]
