"""Per-GPU memory of a MergeDNA pre-training layout: parameters, gradients, optimizer state and
activations, with and without activation checkpointing.

    python tools/estimate_memory.py --model 7b --tp 4 --pp 2 --zero 1 --micro-batch 1 --seq-length 4096
    python tools/estimate_memory.py --model 380m --seq-length 131072 --sp 8      # 128k bases on 8 GPUs
    python tools/estimate_memory.py --model 380m --seq-length 32768 --sp-sweep   # --sp 1, 2, 4, 8 on 8 GPUs

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

`--sp S` (train.py's --sequence-parallel-size, DeepSpeed-Ulysses): the S ranks of a group read the
same samples; every Transformer block runs on 1/S of the token width (local-window blocks with a halo
of `window` tokens each side; full-attention blocks over all tokens for n_heads / S heads), while the
embedding, merges, unmerges, final norms, head and losses stay full-size on every rank. Parameters
are replicated and ZeRO partitions gradients and optimizer state over DP x S ranks. S must divide
n_heads and composes with DP and ZeRO only (TP or PP > 1 is refused). The last two lines say
whether the total fits one GPU of --gpu-memory GiB, allowing for the estimator's 25% error;
`--sp-sweep` prints that for S = 1, 2, 4, ... on --gpus GPUs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megamerge.memory_estimate import check_sequence_parallel, estimate
from megamerge.models import MergeDNAConfig
from megamerge.models.mergedna.config import PRESETS

GIB = 1024**3
MARGIN = 0.25  # the estimator's validated accuracy (BENCHMARKS.md, "Memory estimator")


def verdict(total: float, gpu_bytes: float) -> str:
    """Whether `total` bytes fit one GPU, allowing for the estimator's 25% error."""
    share = f"{total / gpu_bytes:.0%} of {gpu_bytes / GIB:g} GiB"
    if total * (1 + MARGIN) <= gpu_bytes:
        return f"fits ({share})"
    if total <= gpu_bytes:
        return f"tight ({share}: within the estimator's {MARGIN:.0%}, measure first)"
    return f"does not fit ({share})"


def layout(a, sp: int, dtype: str) -> tuple[int, dict, float, float]:
    """(DP, the estimate, total, total with activation checkpointing) per GPU at sequence-parallel size sp."""
    dp = a.dp or max(1, a.gpus // (a.tp * a.pp * sp))
    cfg = MergeDNAConfig.from_preset(a.model)
    r = estimate(cfg, a.tp, a.pp, dp, a.zero, a.micro_batch, a.seq_length, dtype, a.device, sp)
    states = r["parameters"] + r["gradients"] + r["optimizer"]
    return dp, r, states + r["activations"].peak, states + r["activations_checkpointed"].peak


def print_layout(a, dtype: str, gpu_bytes: float) -> None:
    dp, r, total, total_ckpt = layout(a, a.sp, dtype)
    print(f"MergeDNA {a.model}: TP={a.tp} PP={a.pp} SP={a.sp} DP={dp} ({a.tp * a.pp * a.sp * dp} GPUs) "
          f"ZeRO-{a.zero}, micro-batch {a.micro_batch} x {a.seq_length} bases, {dtype} on {a.device}; "
          f"heaviest stage {r['stage']} holds {r['params_per_gpu'] / 1e6:.1f}M parameters per GPU; per GPU:")
    rows = [("parameters", r["parameters"]), ("gradients", r["gradients"]),
            ("optimizer state", r["optimizer"])]
    for label, key in (("activations", "activations"),
                       ("activations (checkpointed)", "activations_checkpointed")):
        act = r[key]
        rows += [(label, act.peak), ("  saved for backward", act.saved),
                 ("  backward peak on top", act.transient)]
    for name, value in rows:
        print(f"  {name:28s} {value / GIB:8.2f} GiB")
    print(f"  {'total':28s} {total / GIB:8.2f} GiB")
    print(f"  {'total, activation ckpt':28s} {total_ckpt / GIB:8.2f} GiB")
    print(f"  {'verdict':28s} {verdict(total, gpu_bytes)}")
    print(f"  {'verdict, activation ckpt':28s} {verdict(total_ckpt, gpu_bytes)}")


def print_sp_sweep(a, dtype: str, gpu_bytes: float) -> None:
    """One row per sequence-parallel size S = 1, 2, 4, ... up to --gpus (those dividing n_heads)."""
    heads = MergeDNAConfig.from_preset(a.model).n_heads
    sizes = [s for s in (2**i for i in range(a.gpus.bit_length())) if a.gpus % s == 0 and heads % s == 0]
    print(f"MergeDNA {a.model}, micro-batch {a.micro_batch} x {a.seq_length} bases, ZeRO-{a.zero}, {dtype} "
          f"on {a.device}, {a.gpus} GPUs of {gpu_bytes / GIB:g} GiB; memory per GPU:")
    print("| SP | DP | total | verdict | total, act. ckpt | verdict |")
    print("|---:|---:|---:|---|---:|---|")
    for sp in sizes:
        dp, _, total, total_ckpt = layout(a, sp, dtype)
        print(f"| {sp} | {dp} | {total / GIB:.2f} GiB | {verdict(total, gpu_bytes)} "
              f"| {total_ckpt / GIB:.2f} GiB | {verdict(total_ckpt, gpu_bytes)} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="380m", choices=sorted(PRESETS))
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--sp", type=int, default=1,
                   help="sequence-parallel size S (train.py --sequence-parallel-size): DeepSpeed-Ulysses "
                        "over S GPUs per sample; must divide n_heads; with TP = PP = 1 only")
    p.add_argument("--dp", type=int, default=None,
                   help="data-parallel size (default: --gpus / (tp * pp * sp))")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--zero", type=int, default=2, choices=[0, 1, 2])
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--seq-length", type=int, default=4096)
    p.add_argument("--device", default="gpu", choices=["gpu", "cpu"],
                   help="whose attention and norm kernels: flash-attn and fused RMSNorm (gpu), or SDPA's CPU "
                        "kernels: composed RMSNorm and the recomputing blocked local attention (cpu)")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp32"],
                   help="default: bf16 on gpu, fp32 on cpu")
    p.add_argument("--gpu-memory", type=float, default=80.0,
                   help="GiB per GPU that the verdict compares against (default 80: A100 / H100 80GB)")
    p.add_argument("--sp-sweep", action="store_true",
                   help="one row per sequence-parallel size S = 1, 2, 4, ... up to --gpus, DP = gpus / S")
    a = p.parse_args(argv)
    dtype = a.dtype or ("bf16" if a.device == "gpu" else "fp32")
    gpu_bytes = a.gpu_memory * GIB
    if a.sp_sweep and (a.tp > 1 or a.pp > 1 or a.dp):
        p.error("--sp-sweep takes --gpus and sweeps --sp with TP = PP = 1; leave out --tp, --pp and --dp")
    if a.sp_sweep:
        print_sp_sweep(a, dtype, gpu_bytes)
        return 0
    try:
        check_sequence_parallel(MergeDNAConfig.from_preset(a.model), a.tp, a.pp, a.sp)
    except ValueError as e:
        p.error(f"--sp {a.sp}: {e}")
    print_layout(a, dtype, gpu_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
