"""Local Decoder: unmerge tokens to bases with a gather (z_N = S^T z_L), local-window attention,
then a head over the four bases."""

from __future__ import annotations

import torch
from torch import nn

from megamerge.models.common.block import TransformerBlock
from megamerge.models.common.norm import RMSNorm
from megamerge.models.common.rope import rope_angles
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.token_merging import unmerge
from megamerge.vocabulary import NUM_BASE_CLASSES


class LocalDecoder(nn.Module):
    def __init__(self, cfg: MergeDNAConfig):
        super().__init__()
        self.cfg = cfg
        w = (cfg.window, cfg.window)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.n_heads, cfg.ffn_dim, cfg.norm_eps, window=w)
            for _ in range(cfg.local_decoder_layers)
        )
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, NUM_BASE_CLASSES, bias=False)

    def forward(
        self,
        z: torch.Tensor,  # [B, L, D] token states
        token_pos: torch.Tensor,  # [B, L] token positions
        assign: torch.Tensor,  # [B, N] base -> token
        base_valid: torch.Tensor,  # [B, N]
        base_counts: tuple[int, ...] | None = None,  # base_valid's row sums, when known on the host
    ) -> torch.Tensor:  # logits [B, N, 4]
        return self.head(self.hidden_states(z, token_pos, assign, base_valid, base_counts))

    def hidden_states(self, z: torch.Tensor, token_pos: torch.Tensor, assign: torch.Tensor,
                      base_valid: torch.Tensor, base_counts: tuple[int, ...] | None = None) -> torch.Tensor:
        """The normalised per-base states [B, N, D] that the base head reads; per-base task heads
        (megamerge/finetune/heads.py) read them too."""
        B, N = assign.shape
        pos = torch.arange(N, device=z.device, dtype=torch.float32).expand(B, N)
        x = unmerge(z, assign, pos, token_pos, self.cfg.merge_theta)  # [B, N, D]
        rope = rope_angles(pos, self.cfg.head_dim, self.cfg.rope_theta)
        for block in self.blocks:
            x = block(x, rope, base_valid, None, base_counts)
        return self.norm(x)
