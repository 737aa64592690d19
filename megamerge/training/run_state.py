"""`RunState`: where a run stands, as a checkpoint stores it and a resume restores it.

The counters here are the same on every rank and go into the checkpoint's client state. The rest
of a run's position differs per rank (the data loader's place in its shards, the RNG states); the
Trainer saves it beside them, one entry per global rank, and a resume needs the same world size
to give each rank its own entry back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunState:
    iteration: int = 0  # optimizer steps taken (skipped ones included)
    consumed_samples: int = 0  # sequences consumed over all data-parallel ranks
    skipped_iters: int = 0  # iterations skipped for a non-finite loss or gradient, over the whole run
    consecutive_skips: int = 0  # the current run of skipped iterations (not saved: a resume starts afresh)

    def advance(self, global_batch: int, step_applied: bool) -> None:
        """Count one iteration, whether the optimizer applied it or skipped it."""
        self.iteration += 1
        self.consumed_samples += global_batch
        if step_applied:
            self.consecutive_skips = 0
        else:
            self.skipped_iters += 1
            self.consecutive_skips += 1

    def client_state(self) -> dict:
        return {"iteration": self.iteration, "consumed_samples": self.consumed_samples,
                "skipped_iters": self.skipped_iters}

    @classmethod
    def from_client_state(cls, state: dict) -> RunState:
        return cls(iteration=int(state["iteration"]), consumed_samples=int(state["consumed_samples"]),
                   skipped_iters=int(state.get("skipped_iters", 0)))
