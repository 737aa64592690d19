"""SIGTERM / SIGUSR1 -> "save a checkpoint and exit 0" at the next iteration boundary.

SLURM delivers `--signal=USR1@T` (and SIGTERM at preemption) to every task, but not at the same
instant, so the flag is agreed across ranks with an all-reduce before anyone acts on it.
"""

from __future__ import annotations

import signal

import torch
import torch.distributed as dist


class StopRequest:
    def __init__(self, signals=(signal.SIGTERM, signal.SIGUSR1)):
        self.received: int | None = None
        for sig in signals:
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):  # noqa: ARG002 - signal handler signature
        self.received = signum

    def agreed(self, device: torch.device) -> bool:
        """True on every rank if any rank has received a signal."""
        flag = torch.tensor([1 if self.received is not None else 0], device=device)
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
