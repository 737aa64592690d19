"""The module handed to `deepspeed.initialize`: forward(batch) -> the loss dict, so the engine's
forward/backward wrap the paper's three passes."""

from __future__ import annotations

from torch import nn

from megamerge.models.common.batch import Batch


class PretrainingObjective(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> dict:
        return self.model.compute_losses(batch.input_ids, batch.seeds, batch.base_weights)
