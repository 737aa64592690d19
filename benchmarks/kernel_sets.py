"""The two kernel sets the step benchmarks time side by side (bench_step.py on the CPU,
gpu_check.py on a GPU), so one run gives issue 27's before/after ratio:

  new  today's: latent attention with no mask (megamerge/models/common/full_attention.py: per row
       on the CPU, the per-key term in an extra head-dim column elsewhere, flash-attn's varlen
       kernel where it applies), every merge width computed on the host (token_merging.py, "Token
       counts on the host"), the blocked local attention through SDPA's fused kernel (one call per
       row and chunk, overlapping-window contexts, a backward that folds their gradients);
  old  before issue 27: latent attention through SDPA with a mask (boolean key padding, or a float
       mask carrying the size-proportional log-size bias), each merge width read from the device,
       the blocked local attention through SDPA's unfused 5-D path.
"""

from __future__ import annotations

KERNEL_SETS = {  # name -> (latent attention kernel, where merge widths come from, blocked local attention
    # fused); tables list old first
    "old": ("masked", "device", False),
    "new": ("auto", "host", True),
}


def use_kernel_set(name: str) -> None:
    # imported here: gpu_check.py reads KERNEL_SETS before it has installed megamerge's dependencies
    from megamerge.models.common.full_attention import set_full_attention_kernel
    from megamerge.models.common.local_attention import set_blocked_attention_fused
    from megamerge.models.mergedna.local_encoder import set_merge_widths

    latent_attention, merge_widths, blocked_fused = KERNEL_SETS[name]
    set_full_attention_kernel(latent_attention)
    set_merge_widths(merge_widths)
    set_blocked_attention_fused(blocked_fused)
