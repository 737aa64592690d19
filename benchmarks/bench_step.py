"""One MergeDNA training step on the CPU (the three passes, backward, AdamW), today's kernels against
the previous ones, interleaved in one run, written to the `CPU step` section of BENCHMARKS.md.

    python benchmarks/bench_step.py                 # both kernel sets, side by side
    python benchmarks/bench_step.py --kernels new   # one set only (no ratio)
    python benchmarks/bench_step.py --compile       # and the new set with compiled blocks

Kernel sets: benchmarks/kernel_sets.py (old: masked latent attention, merge widths read from
the device and the unfused blocked local attention; new: today's).

Configurations: the tiny preset, and a mid-size one (the 380m layout, 4 / 20 / 4 / 2 blocks, at
D = 256 so that a CPU step takes seconds), both at N = 4096 with one padded sample. The target
(issue 27): the tiny step at least 1.3x faster than the old kernels, medians of interleaved runs.
A second table times the attention kernels alone at the tiny step's shapes, where the two sets
differ; whole steps move with the machine's load by more than that difference. A third splits the
tiny step, under the profiler, into the matmul and attention kernels (the same FLOPs in both sets)
and the rest, which bounds what any kernel set can gain on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.benchmarks_md import machine_line, update_section
from benchmarks.kernel_sets import KERNEL_SETS, use_kernel_set
from megamerge.data.mock_data import MockGenome
from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.common.full_attention import full_attention
from megamerge.models.common.local_attention import local_attention
from megamerge.training.compile import apply_compile
from megamerge.vocabulary import PAD

CONFIGS = {  # name -> (config, micro-batch)
    "tiny": (lambda: MergeDNAConfig.from_preset("tiny"), 2),
    "mid (380m layout, D = 256)": (
        lambda: MergeDNAConfig.from_preset("380m", dim=256, n_heads=4, ffn_dim=704), 1),
}


def make_step(cfg: MergeDNAConfig, micro: int, n: int, compiled: bool = False):
    """A closure running one optimizer step of `cfg` on a fixed batch (the last sample padded);
    `compiled`: each Transformer block compiled, as train.py --compile does."""
    torch.manual_seed(0)
    model = MergeDNA(cfg).train()
    if compiled:
        apply_compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = MockGenome(n, seed=1).batch(torch.arange(max(micro, 2)))[:micro]
    ids[-1, n - n // 8:] = PAD
    seeds = torch.arange(micro) + 100

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.compute_losses(ids, seeds)["loss"].backward()
        optimizer.step()
    return step


def make_kernel_calls(n: int) -> dict:
    """The attention kernels alone at the tiny step's shapes (batch 2, 4 heads of 32, one row 7/8
    valid), forward + backward: {name: closure}. As in the model, q, k and v are [B, L, H, hd]
    projections seen through a transpose, and the output's gradient is a dense tensor (a .sum()'s
    is a stride-0 broadcast, on which the old local kernel's backward ran 1.5x slower than in the
    model). Whole steps move with the machine by more than the kernels' difference; these show
    where it comes from."""
    g = torch.Generator().manual_seed(0)

    def inputs(length: int):
        q, k, v = (torch.randn(2, length, 4, 32, generator=g).requires_grad_() for _ in range(3))
        valid = torch.ones(2, length, dtype=torch.bool)
        valid[1, length * 7 // 8:] = False
        grad = torch.randn(2, 4, length, 32, generator=g)  # [B, H, L, hd], like the output
        return *(t.transpose(1, 2) for t in (q, k, v)), valid, tuple(valid.sum(1).tolist()), grad

    def latent(length: int, biased: bool):
        q, k, v, valid, counts, grad = inputs(length)
        bias = torch.rand(2, length, generator=g).add(1).log() if biased else None
        return lambda: full_attention(q, k, v, valid, key_bias=bias, key_counts=counts).backward(grad)

    def local(length: int):
        q, k, v, valid, _, grad = inputs(length)
        return lambda: local_attention(q, k, v, valid, 16, 16).backward(grad)

    return {"latent attention (passes 1, 3), L = N / 2": latent(n // 2, False),
            "latent attention with the size bias (pass 2), L = 3N / 8": latent(3 * n // 8, True),
            "local attention, window 16, N": local(n)}


def wall_seconds(call) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def interleaved_medians(calls: dict, repeats: int, measure=wall_seconds) -> dict:
    """calls {name: {column: (kernel set, closure)}} -> {name: {column: median of measure(closure)}}
    (seconds by default; a tuple's median is taken per element), the columns interleaved within each
    repeat after one warm-up call each (a compiled closure compiles there)."""
    out = {}
    for name, columns in calls.items():
        results = {c: [] for c in columns}
        for kernel_set, call in columns.values():
            use_kernel_set(kernel_set)
            call()
        for _ in tqdm(range(repeats), desc=name, unit="round"):
            for column, (kernel_set, call) in columns.items():
                use_kernel_set(kernel_set)
                results[column].append(measure(call))
        out[name] = {c: tuple(map(statistics.median, zip(*v))) if isinstance(v[0], tuple)
                     else statistics.median(v) for c, v in results.items()}
    use_kernel_set("new")
    return out


def in_compute_kernels(op: str) -> bool:
    """The matmuls and SDPA's attention kernels: on the CPU both sets run them at about the same
    FLOP/s on the same FLOPs, so no change of kernel set can make them cheaper."""
    return op in ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm") or op.startswith(
        "aten::_scaled_dot_product")


def profiled_split(call) -> tuple[float, float]:
    """(seconds in the compute kernels, seconds in everything else) of one call under the profiler
    (self CPU times)."""
    with torch.profiler.profile() as prof:
        call()
    events = prof.key_averages()
    compute = sum(e.self_cpu_time_total for e in events if in_compute_kernels(e.key)) / 1e6
    return compute, sum(e.self_cpu_time_total for e in events) / 1e6 - compute


def time_split(kernel_sets: list[str], n: int, repeats: int) -> dict:
    """{kernel set: profiled_split of one tiny step}, medians of `repeats` interleaved steps."""
    make_cfg, micro = CONFIGS["tiny"]
    step = make_step(make_cfg(), micro, n)
    name = "profiled tiny step"
    return interleaved_medians({name: {s: (s, step) for s in kernel_sets}}, repeats, profiled_split)[name]


def split_table(splits: dict, tiny_steps: dict) -> list[str]:
    """The profiler split of the tiny step, and the bound it puts on old / new: with everything but
    the compute kernels at zero, the new step would take its compute share of today's time."""
    rows = ["| kernel set | step under the profiler (s) | matmul and attention kernels (s) | their share |",
            "|---|---|---|---|"]
    rows += [f"| {s} | {c + r:.3f} | {c:.3f} | {c / (c + r):.0%} |" for s, (c, r) in splits.items()]
    if "old" in splits and "new" in splits:
        compute, rest = splits["new"]
        share = compute / (compute + rest)
        bound = tiny_steps["old"] / (tiny_steps["new"] * share)
        rows += ["", (f"The most the new set could gain with these FLOPs: old / new of the tiny step above "
                      f"over the new step's compute share, {bound:.2f}x (everything else at zero).")]
    return rows


def measure(kernel_sets: list[str], n: int, repeats: int, compiled: bool) -> dict:
    """{configuration: {column: median seconds per step}}: a column per kernel set, and "new +
    compiled blocks" when `compiled`."""
    steps = {}
    for name, (make_cfg, micro) in CONFIGS.items():
        step = make_step(make_cfg(), micro, n)
        steps[name] = {s: (s, step) for s in kernel_sets}
        if compiled:
            steps[name]["new + compiled blocks"] = ("new", make_step(make_cfg(), micro, n, compiled=True))
    return interleaved_medians(steps, repeats)


def table(result: dict, first: str, unit: str, scale: float, digits: int, suffix: str = "") -> list[str]:
    """A markdown table of interleaved_medians' `result`, times * `scale` in `unit`, with old / X
    for every other column X when the old kernels ran."""
    columns = list(next(iter(result.values())))
    ratios = [c for c in columns if c != "old"] if "old" in columns else []
    header = (f"| {first} | " + " | ".join(f"{c} ({unit})" for c in columns) + " | "
              + "".join(f"old / {c} | " for c in ratios)).rstrip()
    rows = [header, "|---" * (1 + len(columns) + len(ratios)) + "|"]
    for name, times in result.items():
        cells = [f"{times[c] * scale:.{digits}f}" for c in columns]
        cells += [f"{times['old'] / times[c]:.2f}x" for c in ratios]
        rows.append(f"| {name}{suffix} | " + " | ".join(cells) + " |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", choices=("both", *KERNEL_SETS), default="both",
                    help="which kernel sets to time (default both, interleaved, with their ratio)")
    ap.add_argument("--seq-len", type=int, default=4096, help="bases per sample (default 4096)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed steps per kernel set and configuration (median)")
    ap.add_argument("--compile", action="store_true",
                    help="also time the new kernels with each Transformer block compiled (train.py "
                         "--compile; inductor's first step takes minutes on the CPU)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update BENCHMARKS.md")
    args = ap.parse_args(argv)
    sets = list(KERNEL_SETS) if args.kernels == "both" else [args.kernels]
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "n/a"
    steps = measure(sets, args.seq_len, args.repeats, args.compile)
    kernel_calls = {name: {s: (s, call) for s in sets}
                    for name, call in make_kernel_calls(args.seq_len).items()}
    kernels = interleaved_medians(kernel_calls, 3 * args.repeats)
    body = "\n".join([
        (f"Command: `python benchmarks/bench_step.py{' --compile' if args.compile else ''} --repeats "
         f"{args.repeats}{'' if args.seq_len == 4096 else f' --seq-len {args.seq_len}'}` (issue 27's "
         f"CPU before/after; the kernel sets are described in its docstring)"),
        (f"Machine: {machine_line()}; load average {load} when started; fp32; one AdamW step of the three "
         f"passes; medians of {args.repeats} interleaved steps after one warm-up step each."),
        "",
        *table(steps, "configuration", "s/step", 1, 3, f", N = {args.seq_len}"),
        "",
        (f"The attention kernels alone at the tiny step's shapes (N = {args.seq_len}; batch 2, 4 heads of "
         f"32, one row 7/8 valid), forward + backward, medians of {3 * args.repeats} interleaved calls:"),
        "",
        *table(kernels, "kernel", "ms", 1e3, 1),
        "",
        (f"Where the tiny step's time goes (N = {args.seq_len}), by the profiler's self CPU times, medians "
         f"of {args.repeats} interleaved profiled steps:"),
        "",
        *split_table(time_split(sets, args.seq_len, args.repeats), steps["tiny"]),
    ])
    print(body)
    if not args.no_write:
        update_section("CPU step", body)
        print("updated BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
