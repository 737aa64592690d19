"""Sequence parallelism on CPU: per-rank activation memory, peak RSS and step time of one MergeDNA
training step (the three passes, forward and backward, gradients summed over the group as ZeRO
does) at long N, S = 1 against S = 2, in one run.

    python benchmarks/bench_sequence_parallel.py                       # tiny, N = 16k and 32k
    python benchmarks/bench_sequence_parallel.py --seq-lengths 8192 --steps 1

Each (N, S) runs in fresh processes (torchrun, gloo, one thread per rank), so each peak RSS is its
own, measured as benchmarks/bench_memory.py measures it (VmHWM reset after a warm-up step at a short
length, glibc's mmap threshold pinned so that freed tensors leave RSS). Per rank it reports:
  activations  bytes autograd keeps for the backward pass (benchmarks/activation_census.py's
               census of the first step: every distinct storage saved, parameters excluded)
  peak RSS     the high-water mark above the RSS after the warm-up: what the steps added
               (activations, the backward pass's working set, gradients, communication buffers)
  step time    median over --steps timed steps after the census step
The ratio columns divide S = 2's per-rank figure by S = 1's; the estimate columns are
tools/estimate_memory.py's (megamerge/memory_estimate) for the same step, per rank. The compression
is fixed at L/N = 0.5, as in benchmarks/bench_memory.py, so that the estimate sees the same L.
What is split and what is not: megamerge/parallel/README.md, "Sequence parallelism".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_memory import (
    FIXED_COMPRESSION,
    PINNED_MMAP_THRESHOLD,
    current_rss,
    peak_rss,
    reset_peak_rss,
)
from megamerge.free_port import free_port

MIB = 2**20


def worker(model_name: str, seq_length: int, micro: int, steps: int, out: Path) -> None:
    import torch
    import torch.distributed as dist

    from benchmarks.activation_census import SavedTensorCensus
    from megamerge.models import MergeDNA, MergeDNAConfig
    from megamerge.models.common.keyed_random import sample_seeds
    from megamerge.parallel import initialize_model_parallel
    from megamerge.parallel.sequence_parallel import apply_sequence_parallel, backward_scale

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    sp = dist.get_world_size()
    state = initialize_model_parallel(sp=sp)
    torch.manual_seed(0)
    model = MergeDNA(MergeDNAConfig.from_preset(model_name, **FIXED_COMPRESSION)).train()
    apply_sequence_parallel(model, state.sp_group)

    def step(i: int, census: SavedTensorCensus | None = None, length: int = seq_length) -> float:
        index = torch.arange(micro) + micro * i
        ids = torch.randint(0, 4, (micro, length), generator=torch.Generator().manual_seed(i))
        model.zero_grad(set_to_none=True)
        dist.barrier()
        start = time.perf_counter()
        if census is None:
            out_ = model.compute_losses(ids, sample_seeds(0, index))
        else:
            with census:
                out_ = model.compute_losses(ids, sample_seeds(0, index))
        (out_["loss"] * backward_scale(sp)).backward()
        for p in model.parameters():
            if sp > 1 and p.grad is not None:
                dist.all_reduce(p.grad, group=state.sp_group)
        dist.barrier()
        return time.perf_counter() - start

    step(0, length=512)  # pages in the kernels and workspaces that do not grow with N
    model.zero_grad(set_to_none=True)
    reset_peak_rss()
    baseline = current_rss()
    census = SavedTensorCensus(model, checkpointed=False)
    step(0, census)
    times = [step(i + 1) for i in range(steps)]
    result = {
        "activations_mib": sum(census.bytes.values()) / MIB,
        "block_activations_mib": sum(v for (_, _, part), v in census.bytes.items() if part == "blocks") / MIB,
        "peak_rss_mib": (peak_rss() - baseline) / MIB,
        "step_seconds": statistics.median(times),
    }
    gathered = [None] * sp
    dist.all_gather_object(gathered, result)
    if dist.get_rank() == 0:
        out.write_text(json.dumps(gathered))
    dist.destroy_process_group()


def run(model: str, seq_length: int, sp: int, micro: int, steps: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(sp), "--master-port",
               str(free_port()), str(Path(__file__).resolve()), "--worker", "--model", model,
               "--seq-lengths", str(seq_length), "--micro-batch", str(micro), "--steps", str(steps),
               "--out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(PINNED_MMAP_THRESHOLD),
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"bench_sequence_parallel: N={seq_length} S={sp} failed:\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def estimated(model: str, seq_length: int, sp: int, micro: int) -> dict:
    """tools/estimate_memory.py's per-rank figures for this benchmark's step: fp32 CPU kernels, no
    optimizer state (the step stops at the gradients)."""
    from megamerge.memory_estimate.per_gpu import estimate
    from megamerge.models import MergeDNAConfig

    cfg = MergeDNAConfig.from_preset(model, **FIXED_COMPRESSION)
    r = estimate(cfg, tp=1, pp=1, dp=1, zero=0, micro=micro, seq=seq_length, dtype="fp32", device="cpu",
                 sp=sp)
    act = r["activations"]
    return {"saved_mib": act.saved / MIB, "peak_mib": (r["gradients"] + act.peak) / MIB}


def table(results: dict[tuple[int, int], list[dict]], model: str, micro: int) -> str:
    lines = [("| N | S | saved for backward: estimate / census (MiB) | in blocks (census) | peak RSS rise: "
              "estimate / measured (MiB) | measured / estimate | step (s) | saved S/1 | peak RSS S/1 |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for (n, s), ranks in sorted(results.items()):
        worst = {k: max(r[k] for r in ranks) for k in ranks[0]}
        est = estimated(model, n, s, micro)
        base = results.get((n, 1))
        ratios = ["", ""]
        if base and s > 1:
            ratios = [f"{worst[k] / base[0][k]:.2f}" for k in ("activations_mib", "peak_rss_mib")]
        lines.append(f"| {n:,} | {s} | {est['saved_mib']:,.0f} / {worst['activations_mib']:,.0f} | "
                     f"{worst['block_activations_mib'] / worst['activations_mib']:.0%} | "
                     f"{est['peak_mib']:,.0f} / {worst['peak_rss_mib']:,.0f} | "
                     f"{worst['peak_rss_mib'] / est['peak_mib']:.2f} | {worst['step_seconds']:.2f} | "
                     + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="tiny", help="MergeDNA preset")
    p.add_argument("--seq-lengths", default="16384,32768", help="comma-separated N")
    p.add_argument("--sp", default="1,2", help="comma-separated sequence-parallel sizes")
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=2, help="timed steps after the census step")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    lengths = [int(n) for n in a.seq_lengths.split(",")]
    if a.worker:
        worker(a.model, lengths[0], a.micro_batch, a.steps, a.out)
        return 0
    load = os.getloadavg()
    results = {}
    for n in lengths:
        for s in (int(x) for x in a.sp.split(",")):
            print(f"N={n:,} S={s} ...", file=sys.stderr, flush=True)
            results[(n, s)] = run(a.model, n, s, a.micro_batch, a.steps)
    print(f"MergeDNA {a.model}, micro-batch {a.micro_batch}, fp32, one thread per rank, gloo; worst rank "
          f"shown; load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(table(results, a.model, a.micro_batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
