"""GPU accelerations must match their exact PyTorch fallbacks. These run where CUDA exists and
skip with the reason everywhere else (the CPU suite exercises the fallbacks themselves)."""

import pytest
import torch
import torch.nn.functional as F

from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.common.local_attention import flash_attn_available
from megamerge.models.common.norm import RMSNorm, apex_available

NO_CUDA = "no CUDA device on this machine"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.skipif(torch.cuda.is_available() and not apex_available(),
                    reason="NVIDIA apex is not built here "
                           "(install it from NVIDIA's source, never 'pip install apex')")
def test_apex_fused_rmsnorm_matches_pytorch():
    norm = RMSNorm(256).cuda()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 100, 256, device="cuda")
    assert torch.allclose(norm(x), F.rms_norm(x, (256,), norm.weight, norm.eps), atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.skipif(torch.cuda.is_available() and not flash_attn_available(),
                    reason="flash-attn is not installed (pip install '.[gpu]')")
def test_mergedna_bf16_flash_path_tracks_fp32_fallback_on_cuda():
    torch.manual_seed(0)
    model = MergeDNA(MergeDNAConfig.from_preset("tiny")).cuda().eval()
    ids = torch.randint(0, 4, (2, 1024), device="cuda")
    with torch.no_grad():
        exact = model(ids)  # fp32: the blocked / SDPA fallbacks
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = model.to(torch.bfloat16)(ids)  # bf16: flash-attn
    assert (fast.float().softmax(-1) - exact.softmax(-1)).abs().max() < 5e-2
