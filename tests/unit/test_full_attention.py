"""Full (latent) attention without a mask (issue 27): the key-column and per-row kernels equal the
masked formulation they replaced, forward and backward, alone and inside MergeDNA's three passes;
a row's per-row result does not depend on the rows and heads beside it; and no latent call hands
SDPA an `attn_mask`."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from megamerge.data.mock_data import MockGenome
from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.common import full_attention as full_attention_module
from megamerge.models.common.full_attention import full_attention, set_full_attention_kernel
from megamerge.vocabulary import PAD

TOLERANCE = 1e-5  # float32: the two kernels differ only in summation order and one extra product


@pytest.fixture
def kernel():
    """Select a kernel for one test; the default comes back after it."""
    yield set_full_attention_kernel
    set_full_attention_kernel("auto")


def _inputs(B, H, Hkv, L, hd, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, L, hd, generator=g).requires_grad_()
    k, v = (torch.randn(B, Hkv, L, hd, generator=g).requires_grad_() for _ in range(2))
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[1, L // 3:] = False  # a padded row
    bias = torch.rand(B, L, generator=g) * 3  # log sizes
    return q, k, v, valid, bias


def _run(kernel_name, q, k, v, valid, bias, key_counts=None):
    set_full_attention_kernel(kernel_name)
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = full_attention(q, k, v, valid, key_bias=bias, key_counts=key_counts)
    (out[:, :, : int(valid.sum(1).min())] ** 2).sum().backward()  # every query of the shortest row
    return out.detach(), [t.grad for t in (q, k, v)]


MASK_FREE_KERNELS = ("key_column", "per_row")


@pytest.mark.parametrize("mask_free", MASK_FREE_KERNELS)
@pytest.mark.parametrize(("heads", "kv_heads", "hd"), [(2, 2, 16), (4, 2, 64), (2, 2, 96)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_mask_free_kernels_equal_the_masked_kernel(kernel, mask_free, heads, kv_heads, hd, with_bias):
    q, k, v, valid, bias = _inputs(2, heads, kv_heads, 37, hd)
    bias = bias if with_bias else None
    out, grads = _run(mask_free, q, k, v, valid, bias)
    ref, ref_grads = _run("masked", q, k, v, valid, bias)
    queries = valid[:, None, :, None]  # padded queries' outputs are garbage-but-finite or 0 by contract
    assert ((out - ref) * queries).abs().max() <= TOLERANCE
    for got, want in zip(grads, ref_grads, strict=True):
        assert (got - want).abs().max() <= TOLERANCE * max(1.0, float(want.abs().max()))
    # negative control: the bias is really applied (the comparison would see it missing)
    if with_bias:
        assert (out - _run(mask_free, q, k, v, valid, None)[0]).abs().max() > 1e-2


def test_per_row_rows_do_not_depend_on_their_neighbours(kernel):
    """Bit for bit: a row alone, in a batch of others, with its heads split (TP), and with the
    host's counts or the tensor's; the exactness that lets 1-process, DP, TP and SP runs agree."""
    q, k, v, valid, bias = _inputs(3, 4, 4, 29, 16)
    valid[2, 5:] = False
    counts = tuple(valid.sum(1).tolist())
    for b in (None, bias):
        out, grads = _run("per_row", q, k, v, valid, b, key_counts=counts)
        read, read_grads = _run("per_row", q, k, v, valid, b)  # counts read from the tensor
        assert torch.equal(out, read) and all(map(torch.equal, grads, read_grads))
        for row in range(3):
            alone = full_attention(q[row:row + 1], k[row:row + 1], v[row:row + 1], valid[row:row + 1],
                                   key_bias=None if b is None else b[row:row + 1])
            assert torch.equal(alone, out[row:row + 1])
        half = full_attention(q[:, 2:], k[:, 2:], v[:, 2:], valid, key_bias=b)
        assert torch.equal(half, out[:, 2:])
        n = counts[2]
        assert torch.equal(out[2, :, n:], torch.zeros_like(out[2, :, n:]))  # padded queries: 0


def test_padding_is_ignored_and_an_empty_row_stays_finite(kernel):
    q, k, v, valid, _ = _inputs(2, 2, 2, 12, 8)
    out = full_attention(q, k, v, valid)
    short = int(valid[1].sum())
    alone = full_attention(q[1:, :, :short], k[1:, :, :short], v[1:, :, :short], valid[1:, :short])
    assert torch.allclose(out[1:, :, :short], alone, atol=1e-6)
    k2 = k.detach().clone()
    k2[1, :, short:] = 1e4  # padded keys' values cannot reach a valid query
    assert torch.equal(full_attention(q, k2, v, valid)[1, :, :short], out[1, :, :short])
    empty = torch.zeros(1, 12, dtype=torch.bool)
    assert torch.isfinite(full_attention(q[:1], k[:1], v[:1], empty)).all()


def _padded_batch(n=256):
    ids = MockGenome(n, seed=5).batch(torch.arange(3))
    ids[2, n - 70:] = PAD  # one padded sample
    return ids, torch.tensor([11, 12, 13])


def _losses_and_grads(kernel_name, overrides):
    set_full_attention_kernel(kernel_name)
    torch.manual_seed(0)
    model = MergeDNA(MergeDNAConfig.from_preset("tiny", **overrides)).train()
    out = model.compute_losses(*_padded_batch())
    out["loss"].backward()
    return ({k: float(out[k].detach()) for k in ("loss", "mtr", "latent_mtr", "amtm")},
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("mask_free", MASK_FREE_KERNELS)
@pytest.mark.parametrize("overrides", [{}, {"latent_merge_schedule": "single_layer"},
                                       {"size_proportional_attention": False}],
                         ids=["per_block", "single_layer", "plain_attention"])
def test_the_three_passes_are_unchanged(kernel, mask_free, overrides):
    """compute_losses + backward on a padded batch: every loss and every gradient of passes 1-3."""
    losses, grads = _losses_and_grads(mask_free, overrides)
    ref_losses, ref_grads = _losses_and_grads("masked", overrides)
    assert losses == pytest.approx(ref_losses, abs=TOLERANCE)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert ((grad - ref_grads[name]).abs().max()
                <= TOLERANCE * max(1.0, float(ref_grads[name].abs().max()))), name


def test_no_latent_attention_call_passes_a_mask(kernel, monkeypatch):
    calls = []

    def recording_sdpa(*args, **kwargs):
        calls.append(kwargs.get("attn_mask"))
        return F.scaled_dot_product_attention(*args, **kwargs)

    monkeypatch.setattr(full_attention_module, "F",
                        types.SimpleNamespace(scaled_dot_product_attention=recording_sdpa, pad=F.pad))
    torch.manual_seed(0)
    model = MergeDNA(MergeDNAConfig.from_preset("tiny")).train()
    ids, seeds = _padded_batch()
    layers = model.cfg.latent_encoder_layers + model.cfg.latent_decoder_layers
    for name, calls_per_block in (("auto", len(ids)), ("key_column", 1)):  # auto on the CPU: per row
        set_full_attention_kernel(name)
        calls.clear()
        model.compute_losses(ids, seeds)["loss"].backward()
        assert len(calls) == 3 * layers * calls_per_block  # every latent block of the three passes
        assert all(mask is None for mask in calls)
    set_full_attention_kernel("masked")  # negative control: the recorder sees the old kernel's masks
    calls.clear()
    model.compute_losses(*_padded_batch())
    assert calls and all(mask is not None for mask in calls)
