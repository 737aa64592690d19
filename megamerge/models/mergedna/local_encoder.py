"""Local Encoder = the learned tokenizer: local-window attention blocks, each followed by a
token-merging layer, taking N bases down to L tokens (a per-sample target)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from megamerge.models.common.block import TransformerBlock
from megamerge.models.common.norm import RMSNorm
from megamerge.models.common.rope import rope_angles
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.token_merging import TokenState, local_window_merge
from megamerge.vocabulary import PAD, VOCAB_SIZE


class TokenMerger(nn.Module):
    """Scores adjacent pairs with its own small grouping embedding and merges the best r_b."""

    def __init__(self, cfg: MergeDNAConfig):
        super().__init__()
        self.window = cfg.window
        self.temperature = cfg.merge_temperature
        self.rotary_theta = cfg.merge_theta
        self.per_window = cfg.merge_selection == "per_window"
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.grouping = nn.Linear(cfg.dim, cfg.grouping_dim, bias=False)

    def forward(self, state: TokenState, r: torch.Tensor) -> TokenState:
        grouping = self.grouping(self.norm(state.x))  # [B, L, G]
        return local_window_merge(state, grouping, r, self.window, self.temperature, self.rotary_theta,
                                  self.per_window)[0]


class LocalEncoder(nn.Module):
    def __init__(self, cfg: MergeDNAConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(VOCAB_SIZE, cfg.dim)
        w = (cfg.window, cfg.window)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.n_heads, cfg.ffn_dim, cfg.norm_eps, window=w)
            for _ in range(cfg.local_encoder_layers)
        )
        self.mergers = nn.ModuleList(TokenMerger(cfg) for _ in range(cfg.local_encoder_layers))

    def forward(self, input_ids: torch.Tensor, target_tokens: torch.Tensor) -> TokenState:
        """input_ids [B, N] (PAD only as a suffix), target_tokens [B] -> TokenState with L tokens."""
        state = TokenState.from_bases(self.embed(input_ids), input_ids != PAD)
        n_layers = len(self.blocks)
        for i, (block, merger) in enumerate(zip(self.blocks, self.mergers)):
            rope = rope_angles(state.pos, self.cfg.head_dim, self.cfg.rope_theta)
            state = replace(state, x=block(state.x, rope, state.valid))
            # Spread the remaining reduction evenly over the layers left (ceil, so the last layer
            # lands exactly on the target).
            remaining = (state.lengths - target_tokens).clamp(min=0)
            r = -(-remaining // (n_layers - i))
            state = merger(state, r)
        return state
