"""CARMANIA (arXiv 2507.09378): a LLaMA-style causal decoder over single bases with sliding-window
grouped-query attention, trained with next-token cross-entropy plus the transition-matrix loss:

    L = L_NT + beta * L_TM          (beta = cfg.tm_weight, 1 in the paper)

The blocks are megamerge's shared `TransformerBlock` with window (w - 1, 0): exact and linear in
length on CPU (blocked local attention), flash-attn's window_size=(w-1, 0) on CUDA in half
precision. The embedding reads the full 7-id vocabulary (N in a prompt is legal input); the head
predicts only A, C, G, T, so N is never a target and never generated.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from megamerge.models.carmania.config import CarmaniaConfig
from megamerge.models.carmania.kv_cache import SlidingWindowKVCache, cached_block
from megamerge.models.common.block import TransformerBlock
from megamerge.models.common.losses import base_cross_entropy
from megamerge.models.common.norm import RMSNorm
from megamerge.models.common.rope import rope_angles
from megamerge.models.common.transition_loss import transition_matrix_loss
from megamerge.vocabulary import NUM_BASE_CLASSES, VOCAB_SIZE, base_targets, check_input_ids


class Carmania(nn.Module):
    family = "carmania"

    def __init__(self, cfg: CarmaniaConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(VOCAB_SIZE, cfg.dim)
        self.layers = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.n_heads, cfg.ffn_dim, cfg.norm_eps, window=(cfg.window - 1, 0),
                             causal=True, n_kv_heads=cfg.n_kv_heads)
            for _ in range(cfg.n_layers)
        )
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, NUM_BASE_CLASSES, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() == 1:  # norm gains
                nn.init.ones_(p)
            elif name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
                # Residual-branch outputs shrink with depth so the stream's variance stays O(1).
                nn.init.normal_(p, std=self.cfg.init_std / math.sqrt(2 * self.cfg.n_layers))
            else:
                nn.init.normal_(p, std=self.cfg.init_std)

    def parameter_counts(self) -> dict[str, int]:
        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        counts = {"embedding": count(self.tok_embeddings), "blocks": count(self.layers),
                  "head": count(self.norm) + count(self.output)}
        counts["total"] = sum(counts.values())
        return counts

    # ------------------------------------------------------------------------------ forward
    def _rope(self, pos: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """pos [L] integer positions -> (cos, signed sin) [batch, L, 1, hd]."""
        return rope_angles(pos.float()[None].expand(batch, -1), self.cfg.head_dim, self.cfg.rope_theta)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, N] (right-padded) -> next-base logits [B, N, 4]: position t predicts base t+1."""
        return self.output(self.hidden_states(input_ids))

    def hidden_states(self, input_ids: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Per-base states [B, N, D] after `layer` blocks. None or n_layers: the last block's output
        after the final norm, what the head reads; 0 < layer < n_layers: the residual stream after
        that many blocks, un-normalised; 0: the token embeddings."""
        depth = self.cfg.n_layers
        if layer is not None and not 0 <= layer <= depth:
            raise ValueError(f"layer {layer}: this CARMANIA has layers 0..{depth} (0: the embeddings)")
        valid = check_input_ids(input_ids)
        B, N = input_ids.shape
        rope = self._rope(torch.arange(N, device=input_ids.device), B)
        h = self.tok_embeddings(input_ids)  # [B, N, D]
        for block in self.layers[:layer]:
            h = block(h, rope, valid)
        return h if layer is not None and layer < depth else self.norm(h)

    def compute_losses(self, input_ids: torch.Tensor, seeds: torch.Tensor | None = None,
                       base_weights: torch.Tensor | None = None) -> dict:
        """input_ids [B, N] -> {"loss", "nt", "tm", ...}. `seeds` is accepted for the trainer's
        common interface; CARMANIA's objective draws no random numbers. `base_weights` [B, N]
        weigh each predicted base's next-token term (common/losses.py); the transition loss
        compares whole 4x4 matrices, has no per-base term, and is not weighted."""
        del seeds
        logits = self(input_ids)  # [B, N, 4]
        weights = None if base_weights is None else base_weights[:, 1:]  # the weight of the base predicted
        nt, correct, scored = base_cross_entropy(logits[:, :-1], base_targets(input_ids[:, 1:]),
                                                 weights=weights)
        tm = transition_matrix_loss(logits, input_ids, next_token=True)
        return {
            "loss": nt + self.cfg.tm_weight * tm,
            "nt": nt,
            "tm": tm,
            "next_base_correct": correct.detach(),
            "next_base_count": scored.detach(),
        }

    # --------------------------------------------------------------------------- generation
    def new_cache(self) -> SlidingWindowKVCache:
        return SlidingWindowKVCache(self.cfg.n_layers, self.cfg.window)

    @torch.no_grad()
    def forward_cached(self, input_ids: torch.Tensor, cache: SlidingWindowKVCache,
                       chunk: int | None = None) -> torch.Tensor:
        """Continue the cached sequences with input_ids [B, T] (no padding) -> logits [B, T, 4].

        Equal to the matching rows of `forward` on the whole sequence. Long inputs (a prompt) are
        processed in chunks of `chunk` positions (default 2 windows), so memory stays
        O(chunk * (chunk + window)) whatever the prompt length."""
        chunk = chunk or 2 * self.cfg.window
        outputs = []
        for start in range(0, input_ids.shape[1], chunk):
            ids = input_ids[:, start:start + chunk]
            pos = cache.positions(ids.shape[1], ids.device)
            rope = self._rope(pos, ids.shape[0])
            h = self.tok_embeddings(ids)
            for i, layer in enumerate(self.layers):
                h = cached_block(layer, h, rope, pos, cache, i)
            cache.advance(pos)
            outputs.append(self.output(self.norm(h)))
        return torch.cat(outputs, 1)

