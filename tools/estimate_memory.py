"""Per-GPU memory of a MergeDNA pre-training layout: parameters, gradients, optimizer state and
activations, with and without activation checkpointing.

    python tools/estimate_memory.py --model 7b --tp 4 --pp 2 --zero 1 --micro-batch 1 --seq-length 4096

Model states follow the ZeRO paper's accounting for mixed precision with Adam: 2 bytes of bf16
weights and 2 of gradients per parameter, plus 12 bytes of optimizer state (fp32 master weight,
Adam m and v). ZeRO-1 divides the optimizer state by the data-parallel size, ZeRO-2 the gradients
as well. `--dtype fp32` (CPU) counts 4-byte weights and gradients and, with --zero 0, the plain
torch AdamW state (m, v: 8 bytes) without a master copy.

The model lives in megamerge/memory_estimate/. Parameters per GPU are counted exactly on a
meta-device model: the parameters named by the TP split table (megamerge/parallel/
tensor_parallel_plan.py) are divided by TP, everything else is replicated; with PP the pipeline
layers are balanced by parameter count as DeepSpeed does and the heaviest stage is reported.

Activations (megamerge/memory_estimate/activations.py) are the tensors autograd keeps for the
backward pass, site by site for each of the three passes, checked against a saved-tensor census of
real runs (benchmarks/activation_census.py), plus the backward pass's peak on top of them. `--device` picks
whose kernels keep them: flash-attn and fused RMSNorm on the GPU (O(tokens) attention state), or
the CPU's (composed RMSNorm, which keeps x / rms too; the blocked local attention keeps q, k, v
and recomputes the rest). The widest batch the
compression sampler can draw sets the token counts. With activation checkpointing a block keeps
only its input, and one block's activations come back while it is recomputed. Under PP, stage s
holds PP - s micro-batches in flight (1F1B), and the estimate takes the heaviest stage's layers.
benchmarks/bench_memory.py validates the whole estimate against measured CPU runs (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megamerge.memory_estimate import estimate
from megamerge.models import MergeDNAConfig
from megamerge.models.mergedna.config import PRESETS

GIB = 1024**3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="380m", choices=sorted(PRESETS))
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--dp", type=int, default=None, help="data-parallel size (default: --gpus / (tp * pp))")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--zero", type=int, default=2, choices=[0, 1, 2])
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--seq-length", type=int, default=4096)
    p.add_argument("--device", default="gpu", choices=["gpu", "cpu"],
                   help="whose attention and norm kernels: flash-attn and fused RMSNorm (gpu), or SDPA's CPU "
                        "kernels: composed RMSNorm and the recomputing blocked local attention (cpu)")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp32"],
                   help="default: bf16 on gpu, fp32 on cpu")
    a = p.parse_args(argv)
    dtype = a.dtype or ("bf16" if a.device == "gpu" else "fp32")
    dp = a.dp or max(1, a.gpus // (a.tp * a.pp))
    cfg = MergeDNAConfig.from_preset(a.model)
    r = estimate(cfg, a.tp, a.pp, dp, a.zero, a.micro_batch, a.seq_length, dtype, a.device)
    states = r["parameters"] + r["gradients"] + r["optimizer"]
    print(f"MergeDNA {a.model}: TP={a.tp} PP={a.pp} DP={dp} ZeRO-{a.zero}, micro-batch {a.micro_batch} x "
          f"{a.seq_length} bases, {dtype} on {a.device}; heaviest stage {r['stage']} holds "
          f"{r['params_per_gpu'] / 1e6:.1f}M parameters per GPU")
    rows = [("parameters", r["parameters"]), ("gradients", r["gradients"]),
            ("optimizer state", r["optimizer"])]
    for label, key in (("activations", "activations"),
                       ("activations (checkpointed)", "activations_checkpointed")):
        act = r[key]
        rows += [(label, act.peak), ("  saved for backward", act.saved),
                 ("  backward peak on top", act.transient)]
    for name, value in rows:
        print(f"  {name:28s} {value / GIB:8.2f} GiB")
    print(f"  {'total':28s} {(states + r['activations'].peak) / GIB:8.2f} GiB")
    print(f"  {'total, activation ckpt':28s} {(states + r['activations_checkpointed'].peak) / GIB:8.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
