"""Data parallelism for fine-tuning, under torchrun, the deepspeed launcher or srun (RANK / WORLD_SIZE
/ LOCAL_RANK / MASTER_ADDR / MASTER_PORT, or SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID).

Every rank holds the whole task (small) and draws the same global batches; rank r takes members
r, r + W, r + 2W, ... of each. Each rank's loss is its share of the global batch's summed loss
divided by the global count, so summing gradients over ranks gives exactly the single-process
gradient of the same global batch (up to float summation order). Evaluation splits the fixed eval
batches across ranks and gathers the outputs, so every rank computes the same metrics and takes the
same dev decision without a broadcast. A single process never touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from megamerge.training.distributed import export_slurm_rank_env, share_cpu_cores

CPU = torch.device("cpu")


@dataclass(frozen=True)
class DataParallel:
    rank: int = 0
    world_size: int = 1
    device: torch.device = CPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DataParallel:
        export_slurm_rank_env()
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        if world == 1:  # a single process keeps the thread count it was given
            return cls(0, 1, device)
        if device.type == "cpu":
            share_cpu_cores()
        if not torch.distributed.is_initialized():
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29500")
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend, init_method="env://")
        return cls(torch.distributed.get_rank(), torch.distributed.get_world_size(), device)

    def shard(self, index: np.ndarray) -> np.ndarray:
        return index[self.rank::self.world_size]

    def sum_gradients(self, params: list[torch.nn.Parameter], extra: torch.Tensor) -> torch.Tensor:
        """Sum every parameter's gradient over ranks (a missing gradient counts as zero) in one
        flat all-reduce, with `extra` (a few statistics, e.g. the loss) riding along;
        returns the summed `extra`."""
        if self.world_size == 1:
            return extra
        grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype,
                                                                           device=p.device) for p in params]
        flat = torch.cat([*grads, extra.to(grads[0].device, grads[0].dtype)])
        torch.distributed.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
            offset += n
        return flat[offset:].to(extra.device, extra.dtype)

    def gather(self, items: list) -> list:
        """Concatenate every rank's list (rank order)."""
        if self.world_size == 1:
            return items
        everyone: list = [None] * self.world_size
        torch.distributed.all_gather_object(everyone, items)
        return [x for part in everyone for x in part]

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
