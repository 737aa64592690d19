"""Full (global) attention over the valid keys of each row, with an optional additive term per key
(ToMe's size-proportional attention: the log of each key's size), without a mask argument.

Key padding and the size bias are both one number per key added to every query's logit. Off the
CPU the default kernel, "key_column", carries that number inside the dot product: q gains a column of
sqrt(hd) and k a column holding the term (0, the bias, or -PADDING for a padded key), so
q'.k' * hd^-0.5 = q.k * hd^-0.5 + term, and the head dim is padded with zeros to a multiple of 8.
SDPA then gets no `attn_mask`, so its flash and cuDNN backends (and the CPU's fused flash
kernel) can run; the price is 8 more head-dim columns. "masked" is the formulation it replaces (a
boolean key mask, or a float mask carrying the bias), kept as the reference that the tests and
the before/after benchmarks compare against (`set_full_attention_kernel`).

With flash-attn installed (CUDA, fp16/bf16) and no bias, its varlen kernel runs instead, sized by
`key_counts` when the host has them (no device wait).

On the CPU the default is "per_row": each row attends over its own valid prefix, one SDPA call per
row, so padding needs no term at all and only the bias (when there is one) takes the extra column.
It is the fastest mask-free form measured there (BENCHMARKS.md, "CPU step"): the fused CPU kernel
is a third slower at head dim 40 than at 32. The rows' lengths come from the host (`key_counts`,
token_merging.py's "Token counts on the host"); without them it reads them from the tensor, which
on the CPU is no device wait. Each (row, head) is computed alone, so a row's result does not
depend on which rows or heads share its batch or how wide the batch is padded (the key column's
does, in the last bits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from megamerge.models.common.local_attention import _flash_varlen_attention, _use_flash

# A padded key's term: exp(-PADDING) is 0 in float32 and bfloat16 next to any real logit, and
# -PADDING is exact in both.
PADDING = 2.0**15
_FULL_ATTENTION_KERNELS = ("auto", "key_column", "per_row", "masked")
_full_attention_kernel = "auto"


def set_full_attention_kernel(name: str) -> None:
    """"auto" (default: "per_row" on the CPU, "key_column" elsewhere, flash-attn's varlen kernel
    where it applies), one of those two everywhere, or "masked" (the previous kernel, for
    comparisons)."""
    global _full_attention_kernel
    if name not in _FULL_ATTENTION_KERNELS:
        raise ValueError(f"full attention kernel {name!r}: choose one of "
                         f"{', '.join(_FULL_ATTENTION_KERNELS)}")
    _full_attention_kernel = name


def full_attention(q, k, v, key_valid, causal: bool = False, key_bias: torch.Tensor | None = None,
                   key_counts: tuple[int, ...] | None = None) -> torch.Tensor:
    """q [B, H, L, hd], k and v [B, Hkv, L, hd], key_valid [B, L] bool (a prefix of each row),
    key_bias [B, L] or None, key_counts: key_valid's row sums when the host has them
    -> [B, H, L, hd]. Padded queries' outputs are ignored by every caller (garbage-but-finite,
    or 0 under "per_row")."""
    kernel = _full_attention_kernel
    if kernel == "auto":
        if key_bias is None and _use_flash(q):
            return _flash_varlen_attention(q, k, v, key_valid, (-1, -1), causal=causal, key_counts=key_counts)
        kernel = "per_row" if q.device.type == "cpu" else "key_column"
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    if kernel == "per_row" and not causal:
        return per_row_attention(q, k, v, key_valid, key_bias, key_counts)
    # Valid tokens are a prefix, so key 0 is valid whenever any is; forcing it on keeps an
    # all-padding row (an empty sequence) finite instead of NaN.
    keys = key_valid.clone()
    keys[:, 0] = True
    if causal or kernel == "masked":
        return masked_attention(q, k, v, keys, causal, key_bias)
    return key_column_attention(q, k, v, keys, key_bias)


def per_row_attention(q, k, v, key_valid: torch.Tensor, key_bias: torch.Tensor | None,
                      key_counts: tuple[int, ...] | None) -> torch.Tensor:
    """One SDPA call per row over its valid prefix (at least one key, so an empty row stays
    finite); the bias, if any, through key_column_attention on that prefix. In self-attention
    (as many queries as keys) padded queries get 0."""
    counts = key_counts if key_counts is not None else key_valid.sum(1).tolist()  # CPU: no device wait
    L = q.shape[2]
    self_attention = L == k.shape[2]  # queries padded like the keys: skip the padded ones too
    rows = []
    # unbind, not q[b:b + 1]: a slice's backward writes into a zero tensor the size of the whole
    # input, one per row; unbind's is a single stack
    for b, (qb, kb, vb) in enumerate(zip(q.unbind(0), k.unbind(0), v.unbind(0))):  # [H, L, hd] each
        n = max(counts[b], 1)
        queries = n if self_attention else L
        qb, kb, vb = qb[None, :, :queries], kb[None, :, :n], vb[None, :, :n]  # [1, H, n, hd]
        if key_bias is None:
            out = F.scaled_dot_product_attention(qb, kb, vb)
        else:
            out = key_column_attention(qb, kb, vb, None, key_bias[b:b + 1, :n])  # every key valid
        rows.append(out[0] if queries == L else F.pad(out[0], (0, 0, 0, L - queries)))  # pad: a copy
    return torch.stack(rows)  # [B, H, L, hd]


def key_column_head_dim(hd: int) -> int:
    """The head dim the key-column kernel runs at: hd + 1 rounded up to a multiple of 8."""
    return -(-(hd + 1) // 8) * 8


def key_column_attention(q, k, v, keys: torch.Tensor | None, key_bias: torch.Tensor | None) -> torch.Tensor:
    """SDPA without a mask: the per-key term (the bias on kept `keys` [B, L], -PADDING elsewhere;
    None: every key kept) rides in an extra head-dim column."""
    B, H, L, hd = q.shape
    keys_length = k.shape[2]
    term = (torch.zeros(B, keys_length, dtype=q.dtype, device=q.device) if key_bias is None
            else key_bias.to(q.dtype))  # [B, L]
    if keys is not None:
        term = term.masked_fill(~keys, -PADDING)
    extra = key_column_head_dim(hd) - hd  # the term's column and the zero columns up to a multiple of 8
    q_col = torch.zeros(B, H, L, extra, dtype=q.dtype, device=q.device)
    q_col[..., 0] = hd**0.5  # times the kernel's scale hd^-0.5: the term enters the logit unscaled
    k_col = torch.zeros(B, H, keys_length, extra, dtype=k.dtype, device=k.device)
    k_col[..., 0] = term[:, None, :]
    out = F.scaled_dot_product_attention(torch.cat([q, q_col], -1), torch.cat([k, k_col], -1),
                                         F.pad(v, (0, extra)), scale=hd**-0.5)  # [B, H, L, hd + extra]
    return out[..., :hd]


def masked_attention(q, k, v, keys: torch.Tensor, causal: bool,
                     key_bias: torch.Tensor | None) -> torch.Tensor:
    """SDPA under a boolean key mask, or a float mask carrying the bias (-inf on masked keys)."""
    mask = keys[:, None, None, :]
    if causal:
        L = q.shape[2]
        mask = mask & torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    if key_bias is not None:  # a float mask: the bias on allowed keys, -inf elsewhere
        mask = key_bias[:, None, None, :].to(q.dtype).masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
