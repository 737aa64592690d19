"""Blocked local attention is exact against the dense band-mask reference, forward and backward."""

import pytest
import torch

from megamerge.models.common.local_attention import (
    blocked_local_attention,
    dense_local_attention_reference,
    flash_attn_available,
    local_attention,
    unpadded_layout,
)
from tests.helpers import counted_host_syncs


def _qkv(B, H, L, hd, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, hd, generator=g, dtype=dtype).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize(
    "L,left,right,block",
    [(300, 16, 16, None), (300, 16, 16, 16), (77, 16, 16, 64), (10, 16, 16, None),  # shorter than a window
     (257, 127, 0, None), (64, 3, 0, 8)],  # causal (CARMANIA)
)
@pytest.mark.parametrize("chunk_blocks", [None, 1, 3], ids=["one-chunk", "chunks-of-1", "chunks-of-3"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused-as-before-issue-27"])
def test_blocked_matches_dense_reference_with_padding(L, left, right, block, chunk_blocks, fused):
    q, k, v = _qkv(3, 4, L, 16)
    valid = torch.ones(3, L, dtype=torch.bool)
    valid[1, L // 2:] = False  # a padded row
    valid[2, 1:] = False  # a single-token row
    out = blocked_local_attention(q, k, v, valid, left, right, block, chunk_blocks, fused=fused)
    ref = dense_local_attention_reference(q, k, v, valid, left, right)
    # Padded query rows are garbage by contract; compare (and back-propagate) valid rows only.
    sel = valid[:, None, :, None].float()
    assert (out - ref).mul(sel).abs().max() < 1e-5
    w = torch.randn_like(out)
    g1 = torch.autograd.grad((out * w * sel).sum(), (q, k, v))
    g2 = torch.autograd.grad((ref * w * sel).sum(), (q, k, v))
    for a, b in zip(g1, g2):
        assert (a - b).abs().max() < 1e-5
    assert torch.isfinite(out).all()


def test_chunking_changes_no_output_and_keeps_only_the_inputs_for_backward():
    q, k, v = _qkv(2, 3, 1000, 8)
    valid = torch.ones(2, 1000, dtype=torch.bool)
    valid[1, 700:] = False
    whole = blocked_local_attention(q, k, v, valid, 16, 16, 32, chunk_blocks=1000)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        chunked = blocked_local_attention(q, k, v, valid, 16, 16, 32, chunk_blocks=4)
    assert torch.equal(whole, chunked)  # every block's scores are computed the same way
    # q, k, v and the key mask: no unfolded contexts, no probabilities between the two passes.
    assert sum(t.numel() for t in saved) == 3 * q.numel() + valid.numel()
    w = torch.randn_like(whole)
    for a, b in zip(torch.autograd.grad((whole * w).sum(), (q, k, v)),
                    torch.autograd.grad((chunked * w).sum(), (q, k, v))):
        assert (a - b).abs().max() < 1e-6  # key gradients sum chunk halos in another order


def test_a_row_or_head_rounds_alike_whatever_shares_its_call():
    """Bit for bit, forward and backward: the fused kernel computes each (row, head, block) alone,
    so 1-process, DP (rows), TP (heads) and SP (blocks of a slice) runs agree exactly."""
    q, k, v = _qkv(3, 4, 300, 16, seed=3)
    valid = torch.ones(3, 300, dtype=torch.bool)
    valid[1, 170:] = False
    w = torch.randn(3, 4, 300, 16, generator=torch.Generator().manual_seed(4))

    def run(rows, heads, positions=slice(None)):
        parts = [t[rows, heads, positions].detach().requires_grad_() for t in (q, k, v)]
        out = blocked_local_attention(*parts, valid[rows, positions], 16, 16)
        return [out, *torch.autograd.grad((out * w[rows, heads, positions]).sum(), parts)]

    whole = run(slice(None), slice(None))
    for rows, heads in ((slice(0, 1), slice(None)), (slice(1, 3), slice(None)), (slice(None), slice(2, 4))):
        for got, want in zip(run(rows, heads), whole, strict=True):
            assert torch.equal(got, want[rows, heads])
    # a slice of whole 32-position blocks (the default block) whose window lies inside it
    inner = slice(64, 160)
    got = run(slice(None), slice(None), slice(32, 192))[0][:, :, inner.start - 32:inner.stop - 32]
    assert torch.equal(got, whole[0][:, :, inner])


def test_padding_keys_are_never_attended():
    q, k, v = _qkv(1, 2, 40, 8)
    valid = torch.ones(1, 40, dtype=torch.bool)
    valid[0, 30:] = False
    out = blocked_local_attention(q, k, v, valid, 16, 16)
    v2 = v.detach().clone()
    v2[:, :, 30:] = 1e3  # changing padded values must not move valid outputs
    out2 = blocked_local_attention(q, k, v2, valid, 16, 16)
    assert torch.equal(out[:, :, :30], out2[:, :, :30])


def test_grouped_query_heads_are_shared():
    q, _, _ = _qkv(1, 4, 50, 8, seed=1)
    _, k, v = _qkv(1, 2, 50, 8, seed=2)
    valid = torch.ones(1, 50, dtype=torch.bool)
    out = local_attention(q, k, v, valid, 7, 0)
    ref = dense_local_attention_reference(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                          valid, 7, 0)
    assert (out - ref).abs().max() < 1e-5


def test_unpadded_layout_is_the_valid_prefixes_without_a_device_wait():
    """flash-attn's varlen inputs: the valid tokens' flat positions and cu_seqlens, computed on
    the device from the host's counts (an empty row included) instead of a boolean selection."""
    valid = torch.zeros(4, 7, dtype=torch.bool)
    for row, n in enumerate((7, 3, 0, 5)):
        valid[row, :n] = True
    counts = tuple(valid.sum(1).tolist())
    with counted_host_syncs() as syncs:
        index, cu, longest = unpadded_layout(valid, counts)
    assert not syncs
    assert torch.equal(index, valid.reshape(-1).nonzero()[:, 0])
    assert cu.tolist() == [0, 7, 10, 10, 15] and cu.dtype == torch.int32 and longest == 7
    with counted_host_syncs() as syncs:  # without counts: read once from the tensor
        assert torch.equal(unpadded_layout(valid)[0], index)
    assert sum(syncs.values()) == 1


_NO_FLASH = (
    "no CUDA device: the flash-attn path only runs on GPU" if not torch.cuda.is_available()
    else None if flash_attn_available() else "flash-attn is not installed (pip install '.[gpu]')"
)


@pytest.mark.cuda
@pytest.mark.skipif(_NO_FLASH is not None, reason=_NO_FLASH or "")
@pytest.mark.parametrize("left,right", [(16, 16), (127, 0)])
def test_flash_path_matches_blocked_fallback_on_cuda(left, right):
    q, k, v = (t.detach().cuda().bfloat16() for t in _qkv(2, 4, 1000, 64))
    valid = torch.ones(2, 1000, dtype=torch.bool, device="cuda")
    valid[1, 700:] = False
    fast = local_attention(q, k, v, valid, left, right)
    exact = blocked_local_attention(q.float(), k.float(), v.float(), valid, left, right)
    sel = valid[:, None, :, None]
    assert ((fast.float() - exact).abs() * sel).max() < 2e-2  # bf16 rounding only
