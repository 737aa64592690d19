"""The module handed to `deepspeed.initialize`: forward(ids, seeds[, base_weights]) -> the loss
dict, so the engine's forward/backward wrap the paper's three passes."""

from __future__ import annotations

import torch
from torch import nn


class PretrainingObjective(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, seeds: torch.Tensor, base_weights: torch.Tensor | None = None) -> dict:
        return self.model.compute_losses(input_ids, seeds, base_weights)
