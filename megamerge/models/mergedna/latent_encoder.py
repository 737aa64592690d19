"""Latent Encoder: full-attention blocks over the merged tokens. For latent MTR it also merges
globally (objective.merge_latent: ToMe, no window) down to K tokens, at cfg.latent_merge_points:
after every block (the paper's, latent_merge_schedule="per_block", the sequence shrinking block by
block) or in one burst before block `latent_merge_layer` ("single_layer"). The blocks after a merge
attend size-proportionally (objective.latent_key_bias) by default."""

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
        """Returns the encoded state and, with merge_latent (pass 2), the composed map [B, L] from
        the incoming tokens to the K latent groups (None otherwise)."""
        cfg = self.cfg
        merge_points = cfg.latent_merge_points if merge_latent else ()
        latent_map, key_bias, token_valid = None, None, state.valid
        rope = rope_angles(state.pos, cfg.head_dim, cfg.rope_theta)
        for i, block in enumerate(self.blocks):
            if i in merge_points:
                state, latent_map = objective.merge_latent(cfg, state, latent_map, token_valid, i)
                rope = rope_angles(state.pos, cfg.head_dim, cfg.rope_theta)
                key_bias = objective.latent_key_bias(cfg, latent_map, token_valid, state.x.shape[1])  # [B, T]
            state = replace(state, x=block(state.x, rope, state.valid, key_bias))
        if len(self.blocks) in merge_points:  # the merge after the last block
            state, latent_map = objective.merge_latent(cfg, state, latent_map, token_valid, len(self.blocks))
        return replace(state, x=self.norm(state.x)), latent_map
