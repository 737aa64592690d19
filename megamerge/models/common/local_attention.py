"""Exact sliding-window attention whose cost is linear in sequence length, on any device.

A query at position i sees keys j with  -right <= i - j <= left  (MergeDNA: left = right = 16;
CARMANIA: left = w - 1, right = 0, i.e. causal). Keys marked invalid (padding) are never seen.

* CUDA + fp16/bf16 + flash-attn importable: flash-attn's varlen kernel with `window_size`.
* CUDA without flash-attn, when `set_local_attention_kernel("flex")` chose it (benchmarks/gpu_check.py
  times both): flex_attention under a sliding-window block mask, which has a CUDA backward.
* Everywhere else: a blocked formulation. The sequence is cut into query blocks of `block`
  positions; each block attends, through batched SDPA calls over chunks of blocks, to the
  `block + left + right` keys that can reach it, under a static band mask. Cost is
  O(L * (block + left + right)). Its backward (flex_attention has none on CPU) recomputes each
  chunk's attention, so only q, k and v are kept between the passes.

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


_KERNELS = ("blocked", "flex")
_kernel = "blocked"  # the CUDA fallback without flash-attn; "flex" where measured faster
_blocked_fused = True  # False: the blocked form through SDPA's unfused 5-D path, as before issue 27


def set_local_attention_kernel(name: str) -> None:
    """Choose the CUDA kernel used when flash-attn is absent: "blocked" (default) or "flex"."""
    global _kernel
    if name not in _KERNELS:
        raise ValueError(f"local attention kernel {name!r}: choose one of {', '.join(_KERNELS)}")
    if name == "flex" and not flex_attention_available():
        raise ValueError("local attention kernel 'flex': torch.nn.attention.flex_attention is not importable")
    _kernel = name


def set_blocked_attention_fused(fused: bool) -> None:
    """Whether the blocked kernel calls SDPA's fused kernel (default) or the unfused 5-D path it
    replaced (the before/after benchmarks' old kernels, benchmarks/kernel_sets.py)."""
    global _blocked_fused
    _blocked_fused = bool(fused)


def flex_attention_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except Exception:  # noqa: BLE001 - torch < 2.5
        return False
    return True


_compiled_flex = None


def flex_local_attention(q, k, v, key_valid, left: int, right: int) -> torch.Tensor:  # [B, H, L, hd]
    """flex_attention under the band mask; only the blocks the band touches are computed. Compiled
    once, as flex_attention is only fast compiled (token counts change every step: torch.compile
    turns to dynamic shapes after the first recompile)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention)
    B, _, L, _ = q.shape

    def band(b, h, q_idx, kv_idx):
        dist = q_idx - kv_idx
        return (dist <= left) & (dist >= -right) & (key_valid[b, kv_idx] | (dist == 0))

    block_mask = create_block_mask(band, B, None, L, L, device=q.device)
    return _compiled_flex(q, k, v, block_mask=block_mask)


def _use_flash(q: torch.Tensor) -> bool:
    return _flash_varlen is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def default_block(left: int, right: int) -> int:
    # Blocks of ~2x the window amortise SDPA's per-call overhead without wasting much of the band;
    # smaller blocks are dominated by that overhead.
    return max(32, 2 * max(left, right, 1))


def default_chunk_blocks(block: int) -> int:
    # Query blocks per SDPA call: ~2048 positions keep a chunk's scores and probabilities in cache,
    # which beats one call over the whole sequence (BENCHMARKS.md times the kernel).
    return max(1, 2048 // block)


class _Band:
    """The padded layout shared by the forward pass and the recomputing backward pass.

    Queries are padded to whole blocks; keys by `left` in front and to whole blocks behind, so that
    block b's context, the original positions [b*block - left, b*block + block + right), is the
    start of the `key_blocks` padded key blocks b, b+1, ...: a window of the padded keys, which the
    fused path reads as an overlapping-window view (`contexts`) and whose gradient it folds back
    itself (`fold_contexts`); the unfused path concatenates shifted block views, as before."""

    def __init__(self, length: int, left: int, right: int, block: int, chunk_blocks: int, device,
                 fused: bool = True):
        self.left, self.right, self.block, self.fused = left, right, block, fused
        self.n_blocks = -(-length // block)
        self.pad_q = self.n_blocks * block - length
        self.context = block + left + right
        self.key_blocks = -(-self.context // block)
        self.key_pad_back = self.pad_q + (self.key_blocks - 1) * block - left  # >= right
        self.chunk_blocks = chunk_blocks
        i = torch.arange(block, device=device)[:, None]
        j = torch.arange(self.context, device=device)[None, :]
        dist = i - j + left  # query position minus key position
        self.band = (dist <= left) & (dist >= -right)  # [block, context], the same for every block
        self.is_self = dist == 0

    def pad_queries(self, t: torch.Tensor) -> torch.Tensor:  # [B, H, L, hd] -> [B, H, nb * block, hd]
        return F.pad(t, (0, 0, 0, self.pad_q)) if self.pad_q else t  # no copy when L fills the blocks

    def pad_keys(self, t: torch.Tensor) -> torch.Tensor:  # [B, H, L, hd] -> [B, H, (nb + kb - 1) * block, hd]
        return F.pad(t, (0, 0, self.left, self.key_pad_back))

    def pad_key_valid(self, key_valid: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, (nb + kb - 1) * block]
        return F.pad(key_valid, (self.left, self.key_pad_back), value=False)

    def chunks(self):
        """(query rows, key rows) of the padded tensors for each chunk of query blocks."""
        halo = (self.key_blocks - 1) * self.block
        for first in range(0, self.n_blocks, self.chunk_blocks):
            last = min(first + self.chunk_blocks, self.n_blocks)
            rows = slice(first * self.block, last * self.block)
            yield rows, slice(rows.start, rows.stop + halo)

    def block_masks(self, key_ok: torch.Tensor) -> torch.Tensor:
        """key_ok [B, (n + kb - 1) * block] of one chunk -> which context keys each query of its n
        blocks sees, [B, n, block, context]."""
        ok = key_ok.unfold(1, self.context, self.block)  # [B, n, context]
        return self.band & (ok[:, :, None, :] | self.is_self)

    def contexts(self, t: torch.Tensor) -> torch.Tensor:
        """One row's chunk of keys or values t [H, (n + kb - 1) * block, hd] -> each of its n
        blocks' context [H, n, context, hd]: overlapping windows of t, a view."""
        n = t.shape[1] // self.block - self.key_blocks + 1
        return t.unfold(1, self.context, self.block)[:, :n].transpose(-1, -2)

    def fold_contexts(self, grad: torch.Tensor, into: torch.Tensor) -> None:
        """contexts' backward: add grad [H, n, context, hd] into the row's chunk of keys or values
        `into` [H, (n + kb - 1) * block, hd], in place and in a fixed order."""
        n = grad.shape[1]
        blocks = into.unflatten(1, (n + self.key_blocks - 1, self.block))
        for i in range(self.key_blocks):
            width = min(self.block, self.context - i * self.block)
            blocks[:, i : i + n, :width] += grad[:, :, i * self.block : i * self.block + width]

    def attend_row(self, q: torch.Tensor, k_contexts: torch.Tensor, v_contexts: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
        """One row's chunk of n blocks through one SDPA call: q [H, n * block, hd]; k_contexts,
        v_contexts [H, n, context, hd]; mask [n, block, context] -> [H, n * block, hd]. The CPU's
        fused kernel takes 4-D inputs only, so the blocks stand in for its head dim and the row's
        heads for its batch, and the mask broadcasts over the heads (a call over all rows would
        need it copied per head). Each (row, head, block) is computed alone, so its rounding does
        not depend on what shares the call: 1-process, DP, TP, PP and SP runs agree bit for bit
        (tests/unit/test_local_attention.py)."""
        n = mask.shape[0]
        out = F.scaled_dot_product_attention(q.unflatten(1, (n, self.block)), k_contexts, v_contexts,
                                             attn_mask=mask[None])  # [H, n, block, hd]
        return out.flatten(1, 2)

    def attend_unfused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
        """The kernel before issue 27: one chunk of n blocks of every row through SDPA's unfused
        5-D path, the contexts copied out of shifted block views: q [B, H, n * block, hd]; k, v
        [B, H, (n + kb - 1) * block, hd]; mask [B, n, block, context] -> [B, H, n * block, hd]."""
        n = mask.shape[1]

        def contexts(t: torch.Tensor) -> torch.Tensor:  # -> [B, H, n, context, hd]
            blocks = t.unflatten(2, (n + self.key_blocks - 1, self.block))
            shifted = [blocks[:, :, i : i + n] for i in range(self.key_blocks)]
            return torch.cat(shifted, dim=3)[:, :, :, : self.context]

        return F.scaled_dot_product_attention(q.unflatten(2, (n, self.block)), contexts(k), contexts(v),
                                              attn_mask=mask[:, None]).flatten(2, 3)


class _BlockedLocalAttention(torch.autograd.Function):
    """Chunked forward; the backward recomputes one chunk at a time and keeps only q, k and v.

    Autograd through one big call kept every block's unfolded key/value context and probabilities
    (2 x (block + l + r) / block x width plus heads x (block + l + r) per position) and spent most
    of its time on memory-bound fills and copies over them; per chunk, all of that stays in cache
    and is freed at once. Each position's key/value gradient sums its chunk's blocks, then the
    neighbouring chunk's halo: a fixed order, so results are deterministic whatever the layout of
    batch and heads."""

    @staticmethod
    def forward(ctx, q, k, v, key_valid, band: _Band):
        qp, kp, vp, okp = (band.pad_queries(q), band.pad_keys(k), band.pad_keys(v),
                           band.pad_key_valid(key_valid))
        out = qp.new_empty(qp.shape)  # [B, H, nb * block, hd]
        for rows, keys in band.chunks():
            masks = band.block_masks(okp[:, keys])  # [B, n, block, context]
            if not band.fused:
                out[:, :, rows] = band.attend_unfused(qp[:, :, rows], kp[:, :, keys], vp[:, :, keys], masks)
                continue
            for b, mask in enumerate(masks):
                out[b, :, rows] = band.attend_row(qp[b, :, rows], band.contexts(kp[b, :, keys]),
                                                  band.contexts(vp[b, :, keys]), mask)
        ctx.save_for_backward(q, k, v, key_valid)
        ctx.band = band
        return out[:, :, : q.shape[2]]

    @staticmethod
    def backward(ctx, grad_out):  # grad_out [B, H, L, hd]
        q, k, v, key_valid = ctx.saved_tensors
        band: _Band = ctx.band
        qp, kp, vp, okp = (band.pad_queries(q), band.pad_keys(k), band.pad_keys(v),
                           band.pad_key_valid(key_valid))
        gp = band.pad_queries(grad_out)
        dq = torch.empty_like(qp)  # every chunk writes its rows
        dk, dv = torch.zeros_like(kp), torch.zeros_like(vp)  # chunks add into their keys and the halo
        for rows, keys in band.chunks():
            masks = band.block_masks(okp[:, keys])
            if not band.fused:  # autograd through the contexts' slices, as before issue 27
                qc, kc, vc = (t.detach().requires_grad_()
                              for t in (qp[:, :, rows], kp[:, :, keys], vp[:, :, keys]))
                with torch.enable_grad():
                    out = band.attend_unfused(qc, kc, vc, masks)
                gq, gk, gv = torch.autograd.grad(out, (qc, kc, vc), gp[:, :, rows])
                dq[:, :, rows] = gq
                dk[:, :, keys] += gk
                dv[:, :, keys] += gv
                continue
            # Row by row, the gradient stopping at the contexts: no stacked gradients, and the
            # contexts' backward is fold_contexts, not a zero-filled chunk per shifted view.
            for b, mask in enumerate(masks):
                qr = qp[b, :, rows].detach().requires_grad_()
                kx, vx = (band.contexts(t[b, :, keys]).detach().requires_grad_() for t in (kp, vp))
                with torch.enable_grad():
                    out = band.attend_row(qr, kx, vx, mask)
                gq, gk, gv = torch.autograd.grad(out, (qr, kx, vx), gp[b, :, rows])
                dq[b, :, rows] = gq
                band.fold_contexts(gk, dk[b, :, keys])
                band.fold_contexts(gv, dv[b, :, keys])
        L, left = q.shape[2], band.left
        return dq[:, :, :L], dk[:, :, left : left + L], dv[:, :, left : left + L], None, None


def blocked_local_attention(
    q: torch.Tensor,  # [B, H, L, hd]
    k: torch.Tensor,  # [B, H, L, hd]
    v: torch.Tensor,  # [B, H, L, hd]
    key_valid: torch.Tensor,  # [B, L] bool
    left: int,
    right: int,
    block: int | None = None,
    chunk_blocks: int | None = None,
    fused: bool | None = None,  # None: set_blocked_attention_fused's choice
) -> torch.Tensor:  # [B, H, L, hd]
    blk = block or default_block(left, right)
    band = _Band(q.shape[2], left, right, blk, chunk_blocks or default_chunk_blocks(blk), q.device,
                 _blocked_fused if fused is None else fused)
    return _BlockedLocalAttention.apply(q, k, v, key_valid, band)


def dense_local_attention_reference(q, k, v, key_valid, left: int, right: int) -> torch.Tensor:
    """O(L^2) band-mask reference, for tests and benchmarks only."""
    L = q.shape[2]
    pos = torch.arange(L, device=q.device)
    dist = pos[:, None] - pos[None, :]
    band = (dist <= left) & (dist >= -right)
    mask = band & (key_valid[:, None, None, :] | (dist == 0))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def unpadded_layout(key_valid: torch.Tensor, key_counts: tuple[int, ...] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Where the valid prefix of each row of key_valid [B, L] sits in its flattening: (index
    [total] long into B * L, cu_seqlens [B + 1] int32, the longest row). With `key_counts` (the
    row lengths on the host) nothing waits for the device: the index is arithmetic there, not a
    boolean selection whose size only the device knows. Without, the lengths are read (one wait)."""
    L = key_valid.shape[1]
    lengths = key_valid.sum(1, dtype=torch.int32)  # [B]
    if key_counts is None:
        key_counts = tuple(lengths.tolist())  # the one wait, when the host has no counts
    cu = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))  # [B + 1]
    slot = torch.arange(sum(key_counts), device=key_valid.device)  # [total]
    row = torch.searchsorted(cu[1:].long(), slot, right=True)  # [total]: empty rows are skipped
    return row * L + (slot - cu[row]), cu, max(key_counts, default=0)


def _flash_varlen_attention(q, k, v, key_valid, window: tuple[int, int], causal: bool,
                            key_counts: tuple[int, ...] | None = None) -> torch.Tensor:
    """flash-attn on the unpadded tokens; valid tokens must be a prefix of each row."""
    B, H, L, hd = q.shape
    index, cu, longest = unpadded_layout(key_valid, key_counts)

    def unpad(t):  # [B, Hx, L, hd] -> [total, Hx, hd]
        return t.transpose(1, 2).reshape(B * L, t.shape[1], hd).index_select(0, index)

    out = _flash_varlen(
        unpad(q), unpad(k), unpad(v), cu, cu, longest, longest,
        causal=causal, window_size=window,
    )
    full = q.new_zeros(B * L, H, hd).index_copy(0, index, out)
    return full.view(B, L, H, hd).transpose(1, 2)


def local_attention(q, k, v, key_valid, left: int, right: int,
                    key_counts: tuple[int, ...] | None = None) -> torch.Tensor:
    """Dispatch: flash-attn on CUDA half precision (sized from `key_counts`, key_valid's row sums,
    when the host has them), else flex_attention on CUDA if chosen, else the exact blocked kernel."""
    if _use_flash(q):
        return _flash_varlen_attention(q, k, v, key_valid, (left, right), causal=right == 0,
                                       key_counts=key_counts)
    if k.shape[1] != q.shape[1]:  # grouped-query attention: share each K/V head across its group
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    if _kernel == "flex" and q.is_cuda:
        return flex_local_attention(q, k, v, key_valid, left, right)
    return blocked_local_attention(q, k, v, key_valid, left, right)
