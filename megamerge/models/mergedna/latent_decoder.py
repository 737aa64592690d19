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
        for block in self.blocks:
            state = latent_decoder_step(self.cfg, block, state)
        return state


def latent_decoder_step(cfg: MergeDNAConfig, block: nn.Module, state: TokenState) -> TokenState:
    """One latent-decoder block (RoPE at the token positions, the block): LatentDecoder.forward and
    the pipeline's decoder stages run this."""
    rope = rope_angles(state.pos, cfg.head_dim, cfg.rope_theta)
    return replace(state, x=block(state.x, rope, state.valid, None, state.counts))
