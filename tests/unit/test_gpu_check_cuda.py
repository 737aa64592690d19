"""CUDA equivalence tests run by benchmarks/gpu_check.py (`pytest -m cuda`): the flex_attention
local-attention path against the exact reference, forward and backward, and a bf16 forward of
the three-pass loss against fp32. They skip with the reason where there is no CUDA device."""

import pytest
import torch

from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.common import local_attention as la

NO_CUDA = "no CUDA device on this machine"
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]


@pytest.mark.skipif(not la.flex_attention_available(),
                    reason="torch.nn.attention.flex_attention not importable")
@pytest.mark.parametrize("left,right", [(16, 16), (63, 0)])
def test_flex_local_attention_matches_reference_forward_and_backward(left, right):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 1000, 64, device="cuda", requires_grad=True) for _ in range(3))
    valid = torch.ones(2, 1000, dtype=torch.bool, device="cuda")
    valid[1, 700:] = False  # a padded row: padding keys are never seen
    grad = torch.randn(2, 4, 1000, 64, device="cuda")
    outs, grads = [], []
    for fn in (la.dense_local_attention_reference, la.flex_local_attention):
        out = fn(q, k, v, valid, left, right)
        outs.append(out)
        grads.append(torch.autograd.grad(out, (q, k, v), grad))
    keep = valid[:, None, :, None]  # padded queries' outputs are garbage by contract
    torch.testing.assert_close(outs[1] * keep, outs[0] * keep, atol=2e-5, rtol=2e-4)
    for g_flex, g_ref in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_flex, g_ref, atol=2e-4, rtol=2e-3)


def test_blocked_local_attention_matches_reference_on_cuda():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 1000, 64, device="cuda") for _ in range(3))
    valid = torch.ones(2, 1000, dtype=torch.bool, device="cuda")
    out = la.blocked_local_attention(q, k, v, valid, 16, 16)
    torch.testing.assert_close(out, la.dense_local_attention_reference(q, k, v, valid, 16, 16),
                               atol=2e-5, rtol=2e-4)


BF16_LOSS_TOLERANCE = 0.05  # relative, per loss term: bf16's 8-bit mantissa over ~30 blocks


def test_three_pass_loss_bf16_forward_tracks_fp32():
    torch.manual_seed(0)
    model = MergeDNA(MergeDNAConfig.from_preset("tiny")).cuda()
    ids = torch.randint(0, 4, (4, 1024), device="cuda")
    seeds = torch.arange(4, device="cuda")
    with torch.no_grad():
        exact = model.compute_losses(ids, seeds)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = model.compute_losses(ids, seeds)
    for key in ("loss", "mtr", "latent_mtr", "amtm"):
        rel = abs(float(fast[key]) - float(exact[key])) / abs(float(exact[key]))
        assert rel < BF16_LOSS_TOLERANCE, (
            f"{key}: bf16 {float(fast[key]):.4f} vs fp32 {float(exact[key]):.4f}")
