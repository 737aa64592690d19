"""A key/value cache for causal sliding-window attention that never holds more than the window.

A query at position i sees keys i - (w - 1) .. i, so after the current chunk has been attended
only the last w - 1 keys can ever be read again. Each layer keeps them in a ring buffer of
w - 1 slots (position p lives in slot p mod (w - 1)). Keys are stored after RoPE, i.e. rotated
by their absolute position, and attention does not depend on the order of its keys, so the
ring never has to be unrolled: a mask built from the stored positions is all it needs.

The step reuses the block's own modules (norms, projections, SwiGLU); only the attention call
differs from `TransformerBlock.forward`, which sees the whole sequence at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from megamerge.models.common.attention import Attention
from megamerge.models.common.block import TransformerBlock


class SlidingWindowKVCache:
    """Per-layer ring buffers of the last `window - 1` keys and values, for a batch of sequences
    that all share the same positions (generation from one prompt length)."""

    def __init__(self, n_layers: int, window: int):
        self.window = window
        self.slots = window - 1
        self.keys: list[torch.Tensor | None] = [None] * n_layers  # each [B, Hkv, slots, hd]
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.slot_pos: torch.Tensor | None = None  # [slots] absolute position held by each slot, -1 empty
        self.length = 0  # positions consumed so far = position of the next token

    def positions(self, n_new: int, device: torch.device) -> torch.Tensor:
        """Absolute positions [n_new] of the next chunk."""
        return torch.arange(self.length, self.length + n_new, device=device)

    def past(self, layer: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keys, values [B, Hkv, slots, hd], positions [slots]) held for `layer`; allocated on first
        use with the batch, head count and dtype of `like` [B, Hkv, T, hd]."""
        if self.keys[layer] is None:
            B, Hkv, _, hd = like.shape
            self.keys[layer] = like.new_zeros(B, Hkv, self.slots, hd)
            self.values[layer] = like.new_zeros(B, Hkv, self.slots, hd)
        if self.slot_pos is None:
            self.slot_pos = torch.full((self.slots,), -1, dtype=torch.long, device=like.device)
        return self.keys[layer], self.values[layer], self.slot_pos

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> None:
        """Keep the last `slots` of the chunk's keys/values k, v [B, Hkv, T, hd] at positions pos [T]."""
        keep = min(k.shape[2], self.slots)
        slot = pos[-keep:] % self.slots  # distinct: `keep` consecutive positions, keep <= slots
        self.keys[layer][:, :, slot] = k[:, :, -keep:]
        self.values[layer][:, :, slot] = v[:, :, -keep:]

    def advance(self, pos: torch.Tensor) -> None:
        """Called once every layer has stored the chunk at positions pos [T]."""
        keep = min(pos.shape[0], self.slots)
        self.slot_pos[pos[-keep:] % self.slots] = pos[-keep:]
        self.length += pos.shape[0]


def cached_attention(
    attn: Attention,
    x: torch.Tensor,  # [B, T, D], the chunk's normed hidden states
    rope: tuple[torch.Tensor, torch.Tensor],  # cos, signed sin at the chunk's positions: [B, T, 1, hd]
    pos: torch.Tensor,  # [T] absolute positions of the chunk
    cache: SlidingWindowKVCache,
    layer: int,
) -> torch.Tensor:  # [B, T, D]
    B, T, _ = x.shape
    q, k, v = attn.project(x, rope)  # [B, H, T, hd]

    past_k, past_v, past_pos = cache.past(layer, k)
    keys = torch.cat((past_k, k), 2)  # [B, Hkv, slots + T, hd]
    values = torch.cat((past_v, v), 2)
    key_pos = torch.cat((past_pos, pos))  # [slots + T]
    dist = pos[:, None] - key_pos[None, :]  # [T, slots + T] query position minus key position
    mask = (key_pos >= 0) & (dist >= 0) & (dist < cache.window)
    if keys.shape[1] != q.shape[1]:  # grouped-query attention
        rep = q.shape[1] // keys.shape[1]
        keys, values = keys.repeat_interleave(rep, 1), values.repeat_interleave(rep, 1)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # [B, H, T, hd]
    cache.store(layer, k, v, pos)
    return attn.wo(out.transpose(1, 2).reshape(B, T, -1))


def cached_block(
    block: TransformerBlock,
    x: torch.Tensor,  # [B, T, D]
    rope: tuple[torch.Tensor, torch.Tensor],
    pos: torch.Tensor,  # [T]
    cache: SlidingWindowKVCache,
    layer: int,
) -> torch.Tensor:  # [B, T, D]
    """`TransformerBlock.forward` for a chunk that continues the cached sequence."""
    x = x + cached_attention(block.attention, block.attention_norm(x), rope, pos, cache, layer)
    return x + block.feed_forward(block.ffn_norm(x))
