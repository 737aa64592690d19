"""Exact sliding-window attention whose cost is linear in sequence length, on any device.

A query at position i sees keys j with  -right <= i - j <= left  (MergeDNA: left = right = 16;
CARMANIA: left = w - 1, right = 0, i.e. causal). Keys marked invalid (padding) are never seen.

* CUDA + fp16/bf16 + flash-attn importable: flash-attn's varlen kernel with `window_size`.
* Everywhere else: a blocked formulation. The sequence is cut into query blocks of `block`
  positions; each block attends, through one batched SDPA call, to the `block + left + right`
  keys that can reach it, under a static band mask. Cost is O(L * (block + left + right)), and
  it has an ordinary autograd backward (flex_attention has none on CPU).

Padded queries may attend to themselves, so no softmax row is ever empty (no NaN); their outputs
are garbage-but-finite and every caller ignores them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    from flash_attn import flash_attn_varlen_func as _flash_varlen
except Exception:  # noqa: BLE001
    _flash_varlen = None


def flash_attn_available() -> bool:
    return _flash_varlen is not None


def _use_flash(q: torch.Tensor) -> bool:
    return _flash_varlen is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def default_block(left: int, right: int) -> int:
    # Timed by hand on 2 CPU cores (16 heads x 64, window 16, N = 4096 and 16384): blocks of ~2x the
    # window amortise SDPA's per-call overhead without wasting much of the band; 16 was ~3x slower.
    return max(32, 2 * max(left, right, 1))


def blocked_local_attention(
    q: torch.Tensor,  # [B, H, L, hd]
    k: torch.Tensor,  # [B, H, L, hd]
    v: torch.Tensor,  # [B, H, L, hd]
    key_valid: torch.Tensor,  # [B, L] bool
    left: int,
    right: int,
    block: int | None = None,
) -> torch.Tensor:  # [B, H, L, hd]
    B, H, L, hd = q.shape
    blk = block or default_block(left, right)
    nb = -(-L // blk)
    pad_q = nb * blk - L
    ctx = blk + left + right

    # Keys are padded by `left` in front and enough behind so that block b's context is the
    # contiguous slice [b*blk - left, b*blk + blk + right) of the original positions.
    def context(t: torch.Tensor) -> torch.Tensor:  # [B, H, L, hd] -> [B, H, nb, ctx, hd]
        t = F.pad(t, (0, 0, left, pad_q + right))
        return t.unfold(2, ctx, blk).transpose(-1, -2)

    qb = F.pad(q, (0, 0, 0, pad_q)).view(B, H, nb, blk, hd)
    kb, vb = context(k), context(v)
    kv_ok = F.pad(key_valid, (left, pad_q + right), value=False).unfold(1, ctx, blk)  # [B, nb, ctx]

    i = torch.arange(blk, device=q.device)[:, None]
    j = torch.arange(ctx, device=q.device)[None, :]
    dist = i - j + left  # query position minus key position
    band = (dist <= left) & (dist >= -right)  # [blk, ctx], the same for every block
    is_self = dist == 0
    mask = band & (kv_ok[:, None, :, None, :] | is_self)  # [B, 1, nb, blk, ctx]

    # 5-D inputs keep SDPA on its unfused CPU path. Folding blocks into the batch (4-D) lets it take
    # the fused kernel, ~4x faster on CPU, but that kernel's backward rounds differently between runs
    # whose batches are laid out differently, and the hard merge ranking amplifies it: 1-process,
    # DP, TP and PP runs then stop agreeing step for step. Exact equivalence wins here.
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)  # [B, H, nb, blk, hd]
    return out.reshape(B, H, nb * blk, hd)[:, :, :L]


def dense_local_attention_reference(q, k, v, key_valid, left: int, right: int) -> torch.Tensor:
    """O(L^2) band-mask reference, for tests and benchmarks only."""
    L = q.shape[2]
    pos = torch.arange(L, device=q.device)
    dist = pos[:, None] - pos[None, :]
    band = (dist <= left) & (dist >= -right)
    mask = band & (key_valid[:, None, None, :] | (dist == 0))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _flash_varlen_attention(q, k, v, key_valid, window: tuple[int, int], causal: bool) -> torch.Tensor:
    """flash-attn on the unpadded tokens; valid tokens must be a prefix of each row."""
    B, H, L, hd = q.shape
    lengths = key_valid.sum(1, dtype=torch.int32)
    cu = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
    flat = key_valid.reshape(-1)

    def unpad(t):  # [B, Hx, L, hd] -> [total, Hx, hd]
        return t.transpose(1, 2).reshape(B * L, t.shape[1], hd)[flat]

    out = _flash_varlen(
        unpad(q), unpad(k), unpad(v), cu, cu, int(lengths.max()), int(lengths.max()),
        causal=causal, window_size=window,
    )
    full = q.new_zeros(B * L, H, hd)
    full[flat] = out
    return full.view(B, L, H, hd).transpose(1, 2)


def local_attention(q, k, v, key_valid, left: int, right: int) -> torch.Tensor:
    """Dispatch: flash-attn on CUDA half precision, the exact blocked kernel elsewhere."""
    if _use_flash(q):
        return _flash_varlen_attention(q, k, v, key_valid, (left, right), causal=right == 0)
    if k.shape[1] != q.shape[1]:  # grouped-query attention: share each K/V head across its group
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    return blocked_local_attention(q, k, v, key_valid, left, right)


def full_attention(q, k, v, key_valid, causal: bool = False) -> torch.Tensor:
    """Full (global) attention over the valid keys: flash-attn when possible, else SDPA."""
    if _use_flash(q):
        return _flash_varlen_attention(q, k, v, key_valid, (-1, -1), causal=causal)
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    # Valid tokens are a prefix, so key 0 is valid whenever any is; forcing it on keeps an
    # all-padding row (an empty sequence) finite instead of NaN.
    keys = key_valid.clone()
    keys[:, 0] = True
    mask = keys[:, None, None, :]
    if causal:
        L = q.shape[2]
        mask = mask & torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
