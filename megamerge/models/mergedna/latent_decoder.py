"""Latent Decoder: full-attention blocks mapping latent states back towards token space
(pre-training only)."""

from __future__ import annotations

from torch import nn

from megamerge.models.common.block import TransformerBlock
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.latent_encoder import LatentPass, block_on_pass
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
        # the blocks share one pair of RoPE tables (block_on_pass keeps them in the pass), as the
        # pipeline's decoder stages do
        p = LatentPass.start(state)
        for block in self.blocks:
            p = block_on_pass(self.cfg, block, p)
        return p.state
