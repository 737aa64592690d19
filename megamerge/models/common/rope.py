"""Rotary position embeddings at arbitrary (float) positions.

Merged tokens keep a position: the size-weighted mean of the base positions they cover. RoPE is
evaluated at those float positions, so attention after merging still sees true genomic distance.
"""

from __future__ import annotations

import torch


def rope_angles(pos: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """pos [B, L] (float) -> the rotation's tables (cos, signed sin), each [B, L, 1, head_dim] and
    broadcast over heads: cos of each frequency's angle over both halves of the head, and its sin
    with a minus on the first half, so that apply_rope is two products and a sum."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32) / head_dim)
    angles = pos.float()[..., None] * inv_freq  # [B, L, hd/2]
    cos, sin = angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]
    return torch.cat((cos, cos), -1), torch.cat((-sin, sin), -1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, L, H, hd]; rotate the two halves of each head (the LLaMA / GPT-NeoX convention):
    [x1 cos - x2 sin, x2 cos + x1 sin], with the halves swapped by a roll (the same bits as the
    halves' four products, in half the elementwise passes, forward and backward)."""
    x32 = x.float()
    return (x32 * cos + x32.roll(x.shape[-1] // 2, -1) * sin).to(x.dtype)


def rotate_hidden(x: torch.Tensor, offset: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate whole hidden vectors x [B, T, D] by RoPE angles of `offset` [B, T] (over all D dims).

    Used by the rotary merge: a token's constituents are averaged in the merged token's
    positional frame, and unmerging rotates back, so each base reads its own contribution
    unrotated while its token-mates' arrive rotated by their (known) offsets.
    """
    cos, sin = rope_angles(offset, x.shape[-1], theta)  # [B, T, 1, D]
    return apply_rope(x[:, :, None, :], cos, sin)[:, :, 0, :]
