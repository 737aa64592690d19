"""The LLaMA-style pre-norm Transformer block (RMSNorm, RoPE attention, SwiGLU) shared by every
module of MergeDNA and by CARMANIA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megamerge.models.common.attention import Attention
from megamerge.models.common.norm import RMSNorm


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        n_heads: int,
        ffn_dim: int,
        norm_eps: float,
        window: tuple[int, int] | None = None,
        causal: bool = False,
        n_kv_heads: int | None = None,
    ):
        super().__init__()
        self.attention_norm = RMSNorm(dim, norm_eps)
        self.attention = Attention(dim, n_heads, n_kv_heads, window=window, causal=causal)
        self.ffn_norm = RMSNorm(dim, norm_eps)
        self.feed_forward = SwiGLU(dim, ffn_dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], valid: torch.Tensor,
                key_bias: torch.Tensor | None = None, key_counts: tuple[int, ...] | None = None):
        x = x + self.attention(self.attention_norm(x), rope, valid, key_bias, key_counts)
        return x + self.feed_forward(self.ffn_norm(x))
