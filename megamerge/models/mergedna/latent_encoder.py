"""Latent Encoder: full-attention blocks over the merged tokens. For latent MTR it can also merge
globally (objective.merge_latent: ToMe, no window) down to K tokens after `latent_merge_layer` blocks;
the blocks after the merge then attend size-proportionally (objective.latent_key_bias) by default."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from megamerge.models.common.block import TransformerBlock
from megamerge.models.common.norm import RMSNorm
from megamerge.models.common.rope import rope_angles
from megamerge.models.mergedna import objective
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.token_merging import TokenState


class LatentEncoder(nn.Module):
    def __init__(self, cfg: MergeDNAConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.n_heads, cfg.ffn_dim, cfg.norm_eps)
            for _ in range(cfg.latent_encoder_layers)
        )
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(
        self, state: TokenState, merge_latent: bool = False
    ) -> tuple[TokenState, torch.Tensor | None]:
        """Returns the encoded state and, with merge_latent (pass 2), the map [B, L] from the
        incoming tokens to the K latent groups (None otherwise)."""
        latent_map, key_bias, token_valid = None, None, state.valid
        rope = rope_angles(state.pos, self.cfg.head_dim, self.cfg.rope_theta)
        for i, block in enumerate(self.blocks):
            if merge_latent and i == self.cfg.latent_merge_layer:
                state, latent_map = objective.merge_latent(self.cfg, state)
                rope = rope_angles(state.pos, self.cfg.head_dim, self.cfg.rope_theta)
                key_bias = objective.latent_key_bias(self.cfg, latent_map, token_valid, state.x.shape[1])  # [B, K]
            state = replace(state, x=block(state.x, rope, state.valid, key_bias))
        if merge_latent and latent_map is None:  # merge after the last block
            state, latent_map = objective.merge_latent(self.cfg, state)
        return replace(state, x=self.norm(state.x)), latent_map
