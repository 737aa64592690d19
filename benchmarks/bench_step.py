"""One MergeDNA training step on the CPU (the three passes, backward, AdamW), today's kernels against
the previous ones, interleaved in one run, written to the `CPU step` section of BENCHMARKS.md.

    python benchmarks/bench_step.py                 # both kernel sets, side by side
    python benchmarks/bench_step.py --kernels new   # one set only (no ratio)

Kernel sets: benchmarks/kernel_sets.py (old: masked latent attention, merge widths read from
the device and the unfused blocked local attention; new: today's).

Configurations: the tiny preset, and a mid-size one (the 380m layout, 4 / 20 / 4 / 2 blocks, at
D = 256 so that a CPU step takes seconds), both at N = 4096 with one padded sample. The target
(issue 27): the tiny step at least 1.3x faster than the old kernels, medians of interleaved runs.
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
from megamerge.vocabulary import PAD

CONFIGS = {  # name -> (config, micro-batch)
    "tiny": (lambda: MergeDNAConfig.from_preset("tiny"), 2),
    "mid (380m layout, D = 256)": (
        lambda: MergeDNAConfig.from_preset("380m", dim=256, n_heads=4, ffn_dim=704), 1),
}


def make_step(cfg: MergeDNAConfig, micro: int, n: int):
    """A closure running one optimizer step of `cfg` on a fixed batch (the last sample padded)."""
    torch.manual_seed(0)
    model = MergeDNA(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = MockGenome(n, seed=1).batch(torch.arange(max(micro, 2)))[:micro]
    ids[-1, n - n // 8:] = PAD
    seeds = torch.arange(micro) + 100

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.compute_losses(ids, seeds)["loss"].backward()
        optimizer.step()
    return step


def measure(kernel_sets: list[str], n: int, repeats: int) -> dict:
    """{config: {kernel set: median seconds}}, the sets interleaved within each repeat."""
    out = {}
    for name, (make_cfg, micro) in CONFIGS.items():
        step = make_step(make_cfg(), micro, n)
        times = {k: [] for k in kernel_sets}
        for kernel_set in kernel_sets:  # warm-up, one step each
            use_kernel_set(kernel_set)
            step()
        for _ in tqdm(range(repeats), desc=name, unit="round"):
            for kernel_set in kernel_sets:
                use_kernel_set(kernel_set)
                t0 = time.perf_counter()
                step()
                times[kernel_set].append(time.perf_counter() - t0)
        out[name] = {k: statistics.median(v) for k, v in times.items()}
    use_kernel_set("new")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", choices=("both", *KERNEL_SETS), default="both",
                    help="which kernel sets to time (default both, interleaved, with their ratio)")
    ap.add_argument("--seq-len", type=int, default=4096, help="bases per sample (default 4096)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed steps per kernel set and configuration (median)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update BENCHMARKS.md")
    args = ap.parse_args(argv)
    sets = list(KERNEL_SETS) if args.kernels == "both" else [args.kernels]
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "n/a"
    result = measure(sets, args.seq_len, args.repeats)
    header = "| configuration | " + " | ".join(f"{s} kernels (s/step)" for s in sets) + \
        (" | old / new |" if len(sets) == 2 else " |")
    rows = [header, "|---" * (len(sets) + 1 + (len(sets) == 2)) + "|"]
    for name, times in result.items():
        cells = [f"{times[s]:.3f}" for s in sets]
        if len(sets) == 2:
            cells.append(f"{times['old'] / times['new']:.2f}x")
        rows.append(f"| {name}, N = {args.seq_len} | " + " | ".join(cells) + " |")
    body = "\n".join([
        ("Command: `python benchmarks/bench_step.py` (issue 27's CPU before/after; the two kernel sets are "
        "described in its docstring)"),
        (f"Machine: {machine_line()}; load average {load} when started; fp32; one AdamW step of the three "
        f"passes; medians of {args.repeats} interleaved steps after one warm-up step each."),
        "",
        *rows,
    ])
    print(body)
    if not args.no_write:
        update_section("CPU step", body)
        print("updated BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
