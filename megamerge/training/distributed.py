"""Process-group start-up that works under the deepspeed launcher, torchrun and srun.

deepspeed and torchrun export RANK / LOCAL_RANK / WORLD_SIZE; srun exports SLURM_PROCID /
SLURM_LOCALID / SLURM_NTASKS, which are mapped onto them here (MASTER_ADDR and MASTER_PORT come
from the sbatch template). The backend is NCCL on GPUs and gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device


def export_slurm_rank_env() -> None:
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    os.environ["WORLD_SIZE"] = os.environ.get("SLURM_NTASKS", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")


def init_distributed(local_rank_flag: int | None = None) -> DistEnv:
    import deepspeed

    export_slurm_rank_env()
    if local_rank_flag is not None and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(local_rank_flag)
    for key, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                         ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")):
        os.environ.setdefault(key, default)
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    _unlink_deepspeed_shm_buffer()
    return DistEnv(torch.distributed.get_rank(), local_rank, torch.distributed.get_world_size(), device)


def _unlink_deepspeed_shm_buffer() -> None:
    """Remove this rank's name for DeepSpeed's CPU shared-memory all-reduce workspace.

    On CPU, DeepSpeed maps a 66 MB /dev/shm segment per rank at start-up and never unlinks it,
    so every run (and every test) would leave 66 MB per rank of RAM-backed tmpfs behind. Once
    all ranks have mapped each other's segments (the barrier), the names are no longer needed:
    the mappings stay valid and the kernel frees the memory when the last process exits, even
    after SIGKILL.
    """
    if torch.cuda.is_available():
        return
    torch.distributed.barrier()
    name = "deepspeed_allreduce_buffer_{}_{}_{}_{}".format(
        os.getuid(), os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], torch.distributed.get_rank())
    try:
        os.unlink(os.path.join("/dev/shm", name))
    except FileNotFoundError:
        pass  # no shm op built (e.g. a non-Linux host or DeepSpeed without the shm builder)


def launched_world_size() -> int:
    """The world size the launcher asked for, read before any process group exists (deepspeed and
    torchrun export WORLD_SIZE, srun SLURM_NTASKS)."""
    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))


def share_cpu_cores() -> None:
    """On CPU, split the machine's cores between the ranks of this node, unless OMP_NUM_THREADS
    already says how many threads each gets."""
    if torch.cuda.is_available() or "OMP_NUM_THREADS" in os.environ:
        return
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("SLURM_NTASKS_PER_NODE", "1")))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))


def all_reduce_mean(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return (t / torch.distributed.get_world_size()).tolist()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def all_gather_counts(counts: dict[str, int]) -> dict[str, int]:
    """{key: count} summed over every rank (the keys may differ between ranks), sorted by key."""
    gathered: list[dict[str, int] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, counts)
    total: dict[str, int] = {}
    for rank_counts in gathered:
        for key, count in rank_counts.items():
            total[key] = total.get(key, 0) + count
    return dict(sorted(total.items()))
