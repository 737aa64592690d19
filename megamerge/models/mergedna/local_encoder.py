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
from megamerge.models.mergedna.merge_decisions import fixed_chunk_similarity, random_similarity
from megamerge.models.mergedna.token_merging import (
    TokenState,
    grouping_similarity,
    local_window_merge,
    merges_this_layer,
)
from megamerge.vocabulary import PAD, VOCAB_SIZE

# (bases per row, token targets per row) as Python ints: what LocalEncoder.forward needs to size
# every merge on the host (models/mergedna/model.py: host_counts).
HostCounts = tuple[tuple[int, ...], tuple[int, ...]]


_merge_widths = "host"  # "device": each merge reads its width from the device (benchmarks' old kernels)


def set_merge_widths(where: str) -> None:
    """Where merges take their output widths from: "host" (host_counts, the default) or "device"
    (a sync per merge, as before issue 27; benchmarks/kernel_sets.py times both)."""
    global _merge_widths
    if where not in ("host", "device"):
        raise ValueError(f"merge widths come from 'host' or 'device', not {where!r}")
    _merge_widths = where


def host_counts(base_valid: torch.Tensor, target_tokens: torch.Tensor) -> HostCounts | None:
    """base_valid [B, N] and target_tokens [B] to the host in one copy: the step's one sync for
    token counts (every merge width after it is computed on the host). None with
    set_merge_widths("device")."""
    if _merge_widths == "device":
        return None
    bases, targets = torch.stack([base_valid.sum(1), target_tokens]).tolist()
    return tuple(bases), tuple(targets)


class TokenMerger(nn.Module):
    """Scores adjacent pairs with its own small grouping embedding and merges the best r_b.
    cfg.merge_decisions is read at every call, so an evaluation can swap the decisions of a
    trained model (merge_decisions.py)."""

    def __init__(self, cfg: MergeDNAConfig):
        super().__init__()
        self.cfg = cfg
        self.window = cfg.window
        self.temperature = cfg.merge_temperature
        self.rotary_theta = cfg.merge_theta
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.grouping = nn.Linear(cfg.dim, cfg.grouping_dim, bias=False)

    def forward(self, state: TokenState, r: torch.Tensor, target_tokens: torch.Tensor,
                host_r: tuple[int, ...] | None = None) -> TokenState:
        decisions = self.cfg.merge_decisions
        per_window = self.cfg.merge_selection == "per_window"
        if decisions == "learned":
            similarity = grouping_similarity(self.grouping(self.norm(state.x)))  # [B, L-1]
        elif decisions == "random":
            similarity = random_similarity(state)
        else:
            similarity, per_window = fixed_chunk_similarity(state, target_tokens), False
        return local_window_merge(state, similarity, r, self.window, self.temperature, self.rotary_theta,
                                  per_window, host_r)[0]


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

    def forward(self, input_ids: torch.Tensor, target_tokens: torch.Tensor,
                host_counts: HostCounts | None = None) -> TokenState:
        """input_ids [B, N] (PAD only as a suffix), target_tokens [B] -> TokenState with L tokens.
        With `host_counts` (the same numbers on the host) no merge reads its width from the device."""
        base_counts, host_targets = host_counts if host_counts is not None else (None, None)
        state = TokenState.from_bases(self.embed(input_ids), input_ids != PAD, base_counts)
        n_layers = len(self.blocks)
        for i, (block, merger) in enumerate(zip(self.blocks, self.mergers)):
            rope = rope_angles(state.pos, self.cfg.head_dim, self.cfg.rope_theta)
            state = replace(state, x=block(state.x, rope, state.valid, None, state.counts))
            r = merges_this_layer(state.lengths, target_tokens, n_layers - i)  # [B]
            host_r = None
            if state.counts is not None:
                host_r = tuple(merges_this_layer(c, t, n_layers - i)
                               for c, t in zip(state.counts, host_targets))
            state = merger(state, r, target_tokens, host_r)
        return state
