"""`Batch`: one pre-training micro-batch, as the trainer, the objective and the pipeline stages
pass it. The per-base loss weights are always there (all ones unless --softmask-loss-weight
weighs soft-masked repeats), so no caller tells a weighted batch from an unweighted one, and
nothing has to look at the weights on the host to pick a path (common/losses.py gives ones the
unweighted losses bit for bit)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`t` on `device`. From the host to a GPU it goes through pinned memory without blocking: a
    copy from pageable memory waits for the device's stream first (a host sync per copy)."""
    device = torch.device(device)
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, N] long
    seeds: torch.Tensor  # [B] long: common/keyed_random.sample_seeds of the samples' global indices
    base_weights: torch.Tensor | None = None  # [B, N] float32: each base's loss weight (None given: all 1)

    def __post_init__(self):
        if self.base_weights is None:
            self.base_weights = torch.ones(self.input_ids.shape, dtype=torch.float32,
                                           device=self.input_ids.device)
        else:
            self.base_weights = self.base_weights.float()

    def to(self, device: torch.device | str) -> Batch:
        return Batch(to_device(self.input_ids, device), to_device(self.seeds, device),
                     to_device(self.base_weights, device))
