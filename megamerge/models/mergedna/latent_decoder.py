"""Latent Decoder: full-attention blocks mapping latent states back towards token space
(pre-training only)."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from megamerge.models.common.block import TransformerBlock
from megamerge.models.common.rope import rope_angles
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.token_merging import TokenState


class LatentDecoder(nn.Module):
    def __init__(self, cfg: MergeDNAConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.n_heads, cfg.ffn_dim, cfg.norm_eps)
            for _ in range(cfg.latent_decoder_layers)
        )

    def forward(self, state: TokenState) -> TokenState:
        rope = rope_angles(state.pos, self.cfg.head_dim, self.cfg.rope_theta)
        x = state.x
        for block in self.blocks:
            x = block(x, rope, state.valid)
        return replace(state, x=x)
