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


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_host_batches_reach_the_gpu_through_pinned_memory_unchanged():
    """Batch.to and the pipeline's carry codes copy without blocking (megamerge/models/common/batch.py
    to_device); the values must arrive before any kernel on the stream reads them."""
    from megamerge.models.common.batch import Batch, to_device

    ids = torch.randint(0, 4, (4, 4096))
    moved = Batch(ids, torch.arange(4), torch.rand(4, 4096)).to("cuda")
    assert moved.input_ids.is_cuda and torch.equal(moved.input_ids.sum(1).cpu(), ids.sum(1))
    assert torch.equal(to_device(ids, "cpu"), ids) and to_device(moved.seeds, "cuda") is moved.seeds
