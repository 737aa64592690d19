"""SIGTERM / SIGUSR1, or a wall-clock budget -> "save a checkpoint and exit 0" at the next
iteration boundary.

SLURM delivers `--signal=USR1@T` (and SIGTERM at preemption) to every task, but not at the same
instant, and ranks cross a time budget at slightly different moments, so both flags are agreed
across ranks with one all-reduce before anyone acts on them.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Stop:
    reason: str
    final_validation: bool  # a time-boxed run ends like a finished one; a preempted one hurries


class StopRequest:
    def __init__(self, signals=(signal.SIGTERM, signal.SIGUSR1), budget_minutes: float | None = None,
                 started: float | None = None):
        """`started` is the time.monotonic() the budget counts from (default: now)."""
        self.received: int | None = None
        self.budget_minutes = budget_minutes
        start = time.monotonic() if started is None else started
        self._deadline = None if budget_minutes is None else start + 60 * budget_minutes
        for sig in signals:
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        self.received = signum

    def agreed(self, device: torch.device) -> Stop | None:
        """Whether to stop now, the same on every rank (a signal on any rank wins over the time
        budget)."""
        over_budget = self._deadline is not None and time.monotonic() >= self._deadline
        flags = torch.tensor([self.received is not None, over_budget], dtype=torch.int32, device=device)
        if dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if flags[0]:
            return Stop(f"signal {self.received or 'on another rank'}", final_validation=False)
        if flags[1]:
            return Stop(f"--exit-duration-in-mins {self.budget_minutes:g}", final_validation=True)
        return None
