"""Tensor, pipeline and data parallelism for MergeDNA, applied from outside the model code.

See README.md in this directory for the layout, the rank ordering and the pipeline design."""

from .layers import ColumnParallelLinear, RowParallelLinear
from .mpu import ModelParallelUnit
from .process_groups import ParallelState, initialize_model_parallel
from .tensor_parallel import apply_tensor_parallel, check_tensor_parallel_sizes

__all__ = [
    "ColumnParallelLinear",
    "ModelParallelUnit",
    "ParallelState",
    "RowParallelLinear",
    "apply_tensor_parallel",
    "check_tensor_parallel_sizes",
    "initialize_model_parallel",
]
