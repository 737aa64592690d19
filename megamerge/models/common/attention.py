"""Multi-head (optionally grouped-query) attention with RoPE, local-window or full.

Head counts are read off the projection shapes at run time, so tensor parallelism can swap the
projections for column/row-parallel ones holding a slice of the heads without touching this code.
Full attention goes through `global_attention`, which sequence parallelism swaps for its
all-to-all version (megamerge/parallel/sequence_parallel.py) in the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from megamerge.models.common.full_attention import full_attention
from megamerge.models.common.local_attention import local_attention
from megamerge.models.common.rope import apply_rope


class Attention(nn.Module):
    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        window: tuple[int, int] | None = None,
        causal: bool = False,
    ):
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        self.head_dim = dim // n_heads
        self.window = window  # (left, right) or None for full attention
        self.causal = causal
        self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        self.global_attention = full_attention

    def project(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, L, D] -> q [B, H, L, hd], k and v [B, Hkv, L, hd], RoPE applied to q and k."""
        B, L, _ = x.shape
        q = self.wq(x).view(B, L, -1, self.head_dim)
        k = self.wk(x).view(B, L, -1, self.head_dim)
        v = self.wv(x).view(B, L, -1, self.head_dim)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return tuple(t.transpose(1, 2) for t in (q, k, v))

    def forward(
        self,
        x: torch.Tensor,  # [B, L, D]
        rope: tuple[torch.Tensor, torch.Tensor],  # cos, signed sin: [B, L, 1, hd] (rope_angles)
        valid: torch.Tensor,  # [B, L] bool, valid tokens form a prefix of each row
        key_bias: torch.Tensor | None = None,  # [B, L] added to the logits of each key (full attention only)
        key_counts: tuple[int, ...] | None = None,  # valid's row sums, when known on the host
    ) -> torch.Tensor:  # [B, L, D]
        B, L, _ = x.shape
        q, k, v = self.project(x, rope)
        if self.window is None:
            out = self.global_attention(q, k, v, valid, causal=self.causal, key_bias=key_bias,
                                        key_counts=key_counts)
        elif key_bias is not None:
            raise ValueError("a key bias applies to full attention only")
        else:
            out = local_attention(q, k, v, valid, *self.window, key_counts=key_counts)
        return self.wo(out.transpose(1, 2).reshape(B, L, -1))
