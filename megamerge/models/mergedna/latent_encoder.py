"""Latent Encoder: full-attention blocks over the merged tokens. For latent MTR it also merges
globally (objective.merge_latent: ToMe, no window) down to K tokens, at cfg.latent_merge_points:
after every block (the paper's, latent_merge_schedule="per_block", the sequence shrinking block by
block) or in one burst before block `latent_merge_layer` ("single_layer"). The blocks after a merge
attend size-proportionally (objective.latent_key_bias) by default.

`latent_block_step` is the one definition of what happens at a block (merge if due, RoPE, key
bias, block): `LatentEncoder.forward` runs it over its blocks, and every pipeline stage and the
pipeline's AMTM preview run it over theirs (models/mergedna/pipeline.py). The Latent Decoder's
blocks run its second half, `block_on_pass`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from megamerge.models.common.block import TransformerBlock
from megamerge.models.common.norm import RMSNorm
from megamerge.models.common.rope import rope_angles
from megamerge.models.mergedna import objective
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.token_merging import NOT_CARRIED, TokenState


@dataclass
class LatentPass:
    """One pass through the Latent Encoder, between two of its blocks."""

    state: TokenState  # the tokens now: x [B, T, D]; T = L until pass 2's first merge
    token_valid: torch.Tensor  # [B, L] bool: the tokens the pass started from
    latent_map: torch.Tensor | None = None  # [B, L] -> [0, T): pass 2's merges so far, composed
    # RoPE (cos, signed sin [B, T, 1, hd]) and the size-proportional key bias [B, T] at the current tokens,
    # computed at the first block after the pass starts or merges, and shared by the blocks up to the
    # next merge (derived from the positions and the map, so recomputed rather than sent between
    # pipeline stages)
    rope_cos: torch.Tensor | None = field(default=None, metadata=NOT_CARRIED)
    rope_sin: torch.Tensor | None = field(default=None, metadata=NOT_CARRIED)
    key_bias: torch.Tensor | None = field(default=None, metadata=NOT_CARRIED)
    # token_valid's row sums, on the host (token_merging.py: "Token counts on the host")
    token_counts: tuple[int, ...] | None = field(default=None, metadata=NOT_CARRIED)

    @classmethod
    def start(cls, state: TokenState) -> LatentPass:
        return cls(state, state.valid, token_counts=state.counts)


def merge_if_due(cfg: MergeDNAConfig, p: LatentPass, point: int, merge_points: tuple[int, ...]) -> LatentPass:
    """Pass 2's global merge when `point` is one of its `merge_points` (passes 1 and 3 have none)."""
    if point not in merge_points:
        return p
    state, latent_map = objective.merge_latent(cfg, p.state, p.latent_map, p.token_valid, point,
                                               p.token_counts)
    return LatentPass(state, p.token_valid, latent_map, token_counts=p.token_counts)


def latent_block_step(cfg: MergeDNAConfig, block: nn.Module, p: LatentPass, index: int,
                      merge_points: tuple[int, ...]) -> LatentPass:
    """Latent-encoder block `index` on pass `p`: merge if due, then the block (block_on_pass)."""
    return block_on_pass(cfg, block, merge_if_due(cfg, p, index, merge_points))


def block_on_pass(cfg: MergeDNAConfig, block: nn.Module, p: LatentPass) -> LatentPass:
    """A full-attention block on pass `p`'s tokens, with RoPE at their positions and, once merged,
    the size-proportional key bias. Both are computed at the first block after the pass starts or
    merges and kept in `p` for the blocks after it: the latent encoder's and the latent decoder's."""
    if p.rope_cos is None:
        cos, sin = rope_angles(p.state.pos, cfg.head_dim, cfg.rope_theta)
        key_bias = None if p.latent_map is None else objective.latent_key_bias(
            cfg, p.latent_map, p.token_valid, p.state.x.shape[1])  # [B, T]
        p = replace(p, rope_cos=cos, rope_sin=sin, key_bias=key_bias)
    x = block(p.state.x, (p.rope_cos, p.rope_sin), p.state.valid, p.key_bias, p.state.counts)
    return replace(p, state=replace(p.state, x=x))


def pass_merge_points(cfg: MergeDNAConfig, merge_latent: bool) -> tuple[int, ...]:
    return cfg.latent_merge_points if merge_latent else ()


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
        merge_points = pass_merge_points(self.cfg, merge_latent)
        p = LatentPass.start(state)
        for i, block in enumerate(self.blocks):
            p = latent_block_step(self.cfg, block, p, i, merge_points)
        p = merge_if_due(self.cfg, p, len(self.blocks), merge_points)  # the merge after the last block
        return replace(p.state, x=self.norm(p.state.x)), p.latent_map

    def after_blocks(self, state: TokenState, layer: int) -> TokenState:
        """The residual stream after the first `layer` blocks (0: the incoming tokens), before the
        final norm and without latent merging: the intermediate layers MergeDNA.encode_state reads."""
        p = LatentPass.start(state)
        for i, block in enumerate(self.blocks[:layer]):
            p = latent_block_step(self.cfg, block, p, i, merge_points=())
        return p.state
