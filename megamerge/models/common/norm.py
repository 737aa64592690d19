"""RMSNorm: NVIDIA apex's fused kernel on CUDA when apex is importable, else PyTorch's exact op."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

try:  # apex is built from NVIDIA's source; the registry package called "apex" is unrelated.
    from apex.normalization.fused_layer_norm import fused_rms_norm_affine as _apex_rms_norm
except Exception:  # noqa: BLE001 - any import failure just means "no fused kernel"
    _apex_rms_norm = None


def apex_available() -> bool:
    return _apex_rms_norm is not None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _apex_rms_norm is not None and x.is_cuda:
            return _apex_rms_norm(x, self.weight, self.weight.shape, self.eps)
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
