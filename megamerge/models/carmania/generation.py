"""Autoregressive sampling from CARMANIA through the sliding-window KV cache.

Each new base costs one cached step: O(window) attention per layer, whatever the length so far.
Bases are drawn on the CPU from a CPU generator, so a seed gives the same sequence on any device
(up to the device's own rounding of the logits).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from megamerge.vocabulary import NUM_BASE_CLASSES


def sample_next_base(
    logits: torch.Tensor,  # [B, 4]
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:  # [B] long, on the CPU
    """temperature 0 is greedy decoding; top_k keeps the k most likely bases (None or 0: all 4)."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0")
    if top_k is not None and not (0 <= top_k <= NUM_BASE_CLASSES):
        raise ValueError(f"top_k={top_k} must lie in [0, {NUM_BASE_CLASSES}] (0: no truncation)")
    logits = logits.detach().float().cpu()
    if temperature == 0 or top_k == 1:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(
    model,  # a Carmania
    prompt_ids: torch.Tensor,  # [B, P] long, P >= 1, no padding
    max_new: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:  # [B, P + max_new] on the CPU
    """Extend each prompt row by max_new sampled bases (A, C, G or T)."""
    if prompt_ids.dim() != 2 or prompt_ids.shape[1] < 1:
        raise ValueError(f"prompt_ids must be [batch, length >= 1], got {tuple(prompt_ids.shape)}")
    device = next(model.parameters()).device
    cache = model.new_cache()
    logits = model.forward_cached(prompt_ids.to(device), cache)[:, -1]  # [B, 4] predicts base P
    new = []
    for step in range(max_new):
        base = sample_next_base(logits, temperature, top_k, generator)  # [B]
        new.append(base)
        if on_step is not None:
            on_step(step + 1)
        if step + 1 < max_new:
            logits = model.forward_cached(base[:, None].to(device), cache)[:, -1]
    generated = torch.stack(new, 1) if new else prompt_ids.new_zeros(prompt_ids.shape[0], 0)
    return torch.cat((prompt_ids.cpu(), generated.to(prompt_ids.dtype)), 1)
