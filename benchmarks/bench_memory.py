#!/usr/bin/env python
"""Validate tools/estimate_memory.py against the measured peak memory of real tiny CPU training
runs, and write the table to the `Memory estimator` section of BENCHMARKS.md.

    python benchmarks/bench_memory.py [--only NAME] [--no-write]

Each configuration runs in a fresh subprocess, so peaks never mix: a one-step warm-up of a
minimal model, then the baseline (current RSS, and the peak reset to it), then 2 training steps
of the configuration (fp32, torch AdamW, the three-pass objective; step 2 runs its backward pass
with the Adam state allocated), then peak RSS (VmHWM) minus the baseline. The warm-up matters:
the first step pages in about 110 MiB of kernel code and runtime workspaces that do not grow
with the model.
The same subprocess then takes the saved-for-backward census of one forward pass
(benchmarks/activation_census.py) so the table can show which part of the estimate is off.

Two allocator settings are measured. glibc's malloc raises its mmap threshold every time a
large block is freed (up to 32 MiB), after which tensors below it come from the heap, whose holes
stay resident: RSS then measures the allocator's history as much as the tensors. Pinning
MALLOC_MMAP_THRESHOLD_ to glibc's own default (128 KiB; setting it disables the dynamic rule,
mallopt(3)) gives every tensor its own mapping, returned on free, so peak RSS measures live
tensors; that is the column the estimate is held to. The default-allocator column shows what
the heap retains on top.

Token counts are made deterministic (compression range (0.5, 0.5)): the estimator sizes for the
widest batch the compression sampler can draw, and a fixed ratio makes that the batch measured.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.activation_census import census
from benchmarks.benchmarks_md import machine_line, update_section
from megamerge.memory_estimate import estimate
from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.training.activation_checkpointing import apply_activation_checkpointing

MIB = 2**20
PINNED_MMAP_THRESHOLD = 128 * 1024  # glibc's default M_MMAP_THRESHOLD, pinned (see the module docstring)
STEPS = 2
SECTION = "Memory estimator"
FIXED_COMPRESSION = {"compression_range": (0.5, 0.5)}


@dataclass(frozen=True)
class RunConfig:
    name: str
    micro: int
    seq: int
    checkpoint: bool
    overrides: dict = field(default_factory=dict)  # MergeDNAConfig fields on top of the tiny preset

    def model_config(self) -> MergeDNAConfig:
        return MergeDNAConfig.from_preset("tiny", **FIXED_COMPRESSION, **self.overrides)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "micro": self.micro, "seq": self.seq,
                           "checkpoint": self.checkpoint, "overrides": self.overrides})


WIDE = {"dim": 256, "n_heads": 8, "ffn_dim": 768}
CONFIGS = [
    RunConfig("tiny", 4, 2048, False),
    RunConfig("tiny", 4, 2048, True),
    RunConfig("tiny, D 256 / 8 heads / FFN 768", 4, 1024, False, WIDE),
    RunConfig("tiny, D 256 / 8 heads / FFN 768", 4, 1024, True, WIDE),
    RunConfig("tiny", 1, 4096, False),
    RunConfig("tiny", 8, 512, True),
]


# ------------------------------------------------------------------------- in the subprocess
def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """The kernel's high-water mark of this process's RSS (VmHWM). Not getrusage's ru_maxrss:
    Linux carries that across exec, so a child started from a large parent (a pytest process,
    say) would report the parent's peak."""
    with open("/proc/self/status") as f:
        return int(re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.MULTILINE).group(1)) * 1024


def reset_peak_rss() -> None:
    """Set VmHWM to the current RSS (proc(5), clear_refs "5"), so the warm-up's peak is forgotten."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def train_steps(cfg: MergeDNAConfig, micro: int, seq: int, checkpoint: bool, steps: int) -> None:
    torch.manual_seed(0)
    model = MergeDNA(cfg).train()
    if checkpoint:
        apply_activation_checkpointing(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 4, (micro, seq))
    for _ in range(steps):
        model.compute_losses(ids)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def measure_here(run: RunConfig, with_census: bool) -> dict:
    train_steps(MergeDNAConfig.from_preset("tiny"), 1, 64, run.checkpoint, 1)  # warm-up
    reset_peak_rss()
    baseline = current_rss()
    train_steps(run.model_config(), run.micro, run.seq, run.checkpoint, STEPS)
    result = {"peak_bytes": peak_rss() - baseline}
    if with_census:  # after the peak was read, and a forward pass only: it cannot raise the peak
        result["census_saved_bytes"] = sum(
            census(run.model_config(), run.micro, run.seq, run.checkpoint).values())
    return result


# ---------------------------------------------------------------------------- in the parent
def measure(run: RunConfig, pinned: bool, with_census: bool = False) -> dict:
    """Peak RSS above the baseline of `run` in a fresh process (see the module docstring), and
    optionally the saved-for-backward census of its forward pass."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if pinned:
        env["MALLOC_MMAP_THRESHOLD_"] = str(PINNED_MMAP_THRESHOLD)
    command = ([sys.executable, __file__, "--measure-one", run.to_json()]
               + (["--census"] if with_census else []))
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def estimated(run: RunConfig) -> dict:
    """The estimator for one CPU process: fp32, torch AdamW (ZeRO-0), CPU kernels."""
    r = estimate(run.model_config(), tp=1, pp=1, dp=1, zero=0, micro=run.micro, seq=run.seq, dtype="fp32",
                 device="cpu")
    act = r["activations_checkpointed" if run.checkpoint else "activations"]
    states = r["parameters"] + r["gradients"] + r["optimizer"]
    return {"total": states + act.peak, "saved": act.saved, "transient": act.transient, "states": states}


def validate(runs: list[RunConfig], default_allocator: bool = True) -> list[dict]:
    rows = []
    for run in runs:
        row = {"run": run, "estimate": estimated(run), "pinned": measure(run, pinned=True, with_census=True)}
        if default_allocator:
            row["default"] = measure(run, pinned=False)
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


TABLE_HEADER = (
    "| model | seq x micro | act. ckpt | saved: estimate / census MiB "
    "| estimate MiB (states + saved + backward peak) "
    "| measured MiB | ratio | measured MiB, glibc default | ratio |\n"
    "|---|---|:-:|---:|---:|---:|---:|---:|---:|"
)


def format_row(row: dict) -> str:
    run, est, pinned = row["run"], row["estimate"], row["pinned"]
    default = row.get("default")
    default_cells = (f"{default['peak_bytes'] / MIB:.0f} | {est['total'] / default['peak_bytes']:.2f}"
                     if default else "- | -")
    return (f"| {run.name} | {run.seq} x {run.micro} | {'yes' if run.checkpoint else 'no'} "
            f"| {est['saved'] / MIB:.0f} / {pinned['census_saved_bytes'] / MIB:.0f} "
            f"| {est['states'] / MIB:.0f} + {est['saved'] / MIB:.0f} + {est['transient'] / MIB:.0f} = "
            f"{est['total'] / MIB:.0f} | {pinned['peak_bytes'] / MIB:.0f} "
            f"| {est['total'] / pinned['peak_bytes']:.2f} "
            f"| {default_cells} |")


def section_body(rows: list[dict]) -> str:
    ratios = [r["estimate"]["total"] / r["pinned"]["peak_bytes"] for r in rows]
    within = sum(0.75 <= x <= 1.25 for x in ratios)
    verdict = "met" if within == len(rows) else "NOT met"
    lines = [
        f"Command: `python benchmarks/bench_memory.py`. Machine: {machine_line()}.",
        "",
        (f"### tools/estimate_memory.py against measured peak RSS, target within 25%: {verdict} "
         f"({within} of {len(rows)}; ratios {min(ratios):.2f}-{max(ratios):.2f})"),
        "",
        (f"Measured: one CPU process per row, fp32, torch AdamW, {STEPS} steps of the three-pass objective; "
         "peak RSS (VmHWM, reset after a one-step warm-up of a minimal model, which pages in ~110 MiB of "
         "kernel code and runtime workspaces that do not grow with the model) minus the RSS after that "
         "warm-up. getrusage's ru_maxrss is not used: Linux carries it across exec, so it can report the "
         "launching process's peak. glibc's mmap threshold is pinned to its default of "
         f"{PINNED_MMAP_THRESHOLD // 1024} KiB (`MALLOC_MMAP_THRESHOLD_`), so freed tensors leave RSS and "
         "the peak measures live tensors; the last two columns are the same runs with glibc's dynamic "
         "threshold, whose heap keeps freed blocks resident. Compression fixed at L/N = 0.5. Estimate: "
         "`--device cpu --dtype fp32 --zero 0`: model states, then the activations saved for backward (the "
         "census column is the saved_tensors_hooks count of the same forward pass, "
         "benchmarks/activation_census.py), then the backward pass's peak on top of them."),
        "",
        TABLE_HEADER,
        *(format_row(r) for r in rows),
        "",
        ("What the activation model counts (megamerge/memory_estimate/activations.py), each term a tensor "
         "the census finds: per block, each RMSNorm's input, x / rms and output (3 x D per token on CPU, "
         "where the norm is composed of elementwise ops; 2 x D with a fused GPU kernel); the attention "
         "kernel's state; SwiGLU's gate, up, silu(gate) and product (4 x FFN). Attention on CPU: full "
         "attention takes SDPA's fused flash kernel (q, k, v, output, log-sum-exp: O(L)); the blocked local "
         "attention keeps q, k and v only (4 x D per token with wo's input), since its backward recomputes "
         "each chunk of blocks, and its backward working set is the padded keys, values and gradients (5-7 x "
         "D per token). Outside the blocks: the RoPE tables of each module, each local merge's scorer, "
         "rotary rotation (cos, sin and the rotated constituents, fp32) and merged sums, the latent MTR "
         "global merge's rotations, the unmerge gathers' sources and rotations back, the final norms, the "
         "head and the log-probabilities. The backward peak on top: the first block's working set (the "
         "residual stream's gradient plus SwiGLU's d(gate) and d(up), which its mul backward returns "
         "together) and, with checkpointing, the largest block's recomputed activations. On the GPU "
         "(`--device gpu`, the default) flash-attn keeps O(tokens) state for local and full attention "
         "alike."),
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--measure-one", help=argparse.SUPPRESS)  # the subprocess: one RunConfig as JSON
    p.add_argument("--census", action="store_true", help=argparse.SUPPRESS)  # the subprocess: census too
    p.add_argument("--only", type=int, nargs="*", help="indices into the configuration list")
    p.add_argument("--no-default-allocator", action="store_true", help="skip the glibc-default column")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    a = p.parse_args(argv)
    if a.measure_one:
        spec = json.loads(a.measure_one)
        print(json.dumps(measure_here(RunConfig(**spec), a.census)))
        return 0
    runs = [CONFIGS[i] for i in a.only] if a.only else CONFIGS
    print(TABLE_HEADER, flush=True)
    rows = validate(runs, default_allocator=not a.no_default_allocator)
    if not a.no_write:
        update_section(SECTION, section_body(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
