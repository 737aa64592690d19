"""The `mpu` object DeepSpeed takes in `deepspeed.initialize(mpu=...)`.

DeepSpeed asks it for the data-parallel group (gradient reduction and ZeRO partitioning; under
sequence parallelism the sequence-data-parallel group), the
model-parallel rank (a replicated parameter's gradient norm is counted only on model-parallel
rank 0, a parameter flagged `tensor_model_parallel` on every rank) and the model-parallel group
(the norm's partial sums are added over it). Megatron-era and newer method names are both given.
"""

from __future__ import annotations

from .process_groups import ParallelState


class ModelParallelUnit:
    def __init__(self, state: ParallelState):
        self.state = state

    # Data parallel
    def get_data_parallel_group(self):
        return self.state.dp_group

    def get_data_parallel_rank(self) -> int:
        return self.state.dp_rank

    def get_data_parallel_world_size(self) -> int:
        return self.state.dp

    # Model parallel = tensor x pipeline ranks of one replica
    def get_model_parallel_group(self):
        return self.state.model_parallel_group

    def get_model_parallel_rank(self) -> int:
        return self.state.model_parallel_rank

    def get_model_parallel_world_size(self) -> int:
        return self.state.tp * self.state.pp

    # Tensor parallel
    def get_tensor_model_parallel_group(self):
        return self.state.tp_group

    def get_tensor_model_parallel_rank(self) -> int:
        return self.state.tp_rank

    def get_tensor_model_parallel_world_size(self) -> int:
        return self.state.tp

    def get_tensor_model_parallel_src_rank(self) -> int:
        return self.state.tp_ranks[0]

    # Pipeline parallel
    def get_pipe_parallel_group(self):
        return self.state.pp_group

    def get_pipe_parallel_rank(self) -> int:
        return self.state.pp_rank

    def get_pipe_parallel_world_size(self) -> int:
        return self.state.pp

    get_pipeline_model_parallel_group = get_pipe_parallel_group
    get_pipeline_model_parallel_rank = get_pipe_parallel_rank
    get_pipeline_model_parallel_world_size = get_pipe_parallel_world_size

    # Sequence parallel (Ulysses). DeepSpeed reduces gradients and partitions ZeRO over the
    # sequence-data-parallel group (DP x SP), summing over SP and averaging over DP.
    def get_sequence_parallel_group(self):
        return self.state.sp_group

    def get_sequence_parallel_rank(self) -> int:
        return self.state.sp_rank

    def get_sequence_parallel_world_size(self) -> int:
        return self.state.sp

    def get_sequence_data_parallel_group(self):
        return self.state.seq_dp_group

    def get_sequence_data_parallel_rank(self) -> int:
        return self.state.seq_dp_rank

    def get_sequence_data_parallel_world_size(self) -> int:
        return self.state.dp * self.state.sp
