"""Check a SLURM launch on the batch node before the allocation's ranks start, and plan the batch.

    python slurm/preflight.py --world-size 16 --nodes 2 -- <train.py flags>     (slurm/common.sh)
    python slurm/preflight.py --table [--model 380m] [--ds-config ds_configs/zero2.json]   (README table)

With `--` it parses train.py's flags with train.py's own parser, resolves the DeepSpeed config for
this world size with train.py's own validation, and prints the layout to stderr (the job log):
nodes x ranks, TP / PP / DP (SP / DP with sequence parallelism, DP = world / SP), and global batch =
micro x accumulation x DP. A mistake exits 2 here, once, instead of in every rank after the job has
waited for its nodes.

Scaling: gradient accumulation is derived from the data-parallel size (the ds configs say "auto"),
so the global batch stays the same on any node count. When the micro-batch (--micro-batch-size, else
the config's) x DP would exceed the global batch (e.g. 8 x 64 > 256 on 8 nodes), the micro-batch is
lowered to global / DP; the flag to add is printed on stdout (empty when nothing changes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# MFU assumed for time estimates: the paper's 380M run (100k x 256 x 4096 bases in 5 days on 8
# A100) is ~42% MFU by megamerge's FLOP count; Megatron-class 1B+ runs report 40-55%.
ASSUMED_MFU = 0.40
A100_BF16 = 312e12


def step_flops_per_sample(model: str, seq_length: int) -> float:
    from megamerge.models import MergeDNAConfig
    from megamerge.models.mergedna.flops import mergedna_step_flops

    cfg = MergeDNAConfig.from_preset(model)
    l_tokens = seq_length * cfg.compression_mean
    k_tokens = math.ceil(cfg.latent_compression * l_tokens)
    return mergedna_step_flops(cfg, seq_length, l_tokens, k_tokens)


def estimated_hours(model: str, seq_length: int, global_batch: int, iters: int, gpus: int,
                    peak: float = A100_BF16, mfu: float = ASSUMED_MFU) -> float:
    return iters * global_batch * step_flops_per_sample(model, seq_length) / (gpus * peak * mfu) / 3600


def plan_micro_batch(config_micro: int, global_batch: int, dp: int) -> int:
    """The config's micro-batch, lowered so that micro x DP does not exceed the global batch."""
    if config_micro * dp <= global_batch:
        return config_micro
    if global_batch % dp:
        return config_micro  # no micro-batch fits; resolve_ds_config reports the error
    return global_batch // dp


def preflight(world_size: int, nodes: int, start_iteration: int, train_argv: list[str]) -> int:
    import torch

    from megamerge.parallel.process_groups import data_parallel_size
    from megamerge.training.arguments import parse_args
    from megamerge.training.ds_config import AUTO, DEFAULT_GLOBAL_BATCH, ConfigError, resolve_ds_config
    from megamerge.training.model_from_flags import check_parallel_layout, model_config

    args = parse_args(train_argv)  # argparse errors exit 2 with train.py's usage message
    has_cuda = torch.cuda.is_available()
    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    sp = args.sequence_parallel_size
    extra: list[str] = []
    try:
        dp = data_parallel_size(world_size, tp, pp, sp)
    except ValueError:
        dp = None  # resolve_ds_config and check_parallel_layout below say why
    try:
        if dp is not None:
            raw = json.loads(Path(args.ds_config).read_text())
            requested = args.micro_batch_size or raw.get("train_micro_batch_size_per_gpu")
            global_batch = args.global_batch_size or raw.get("train_batch_size", AUTO)
            if global_batch == AUTO:
                global_batch = DEFAULT_GLOBAL_BATCH
            if isinstance(requested, int) and isinstance(global_batch, int):
                micro = plan_micro_batch(requested, global_batch, dp)
                if micro != requested:
                    print(f"preflight: micro-batch {requested} x DP {dp} exceeds the global batch "
                          f"{global_batch}: using --micro-batch-size {micro}", file=sys.stderr)
                    args.micro_batch_size = micro
                    extra = ["--micro-batch-size", str(micro)]
        ds = resolve_ds_config(args.ds_config, args, world_size, has_cuda)
        check_parallel_layout(args, model_config(args), world_size)
    except (ConfigError, ValueError, OSError) as e:
        print(f"preflight: error: {e}", file=sys.stderr)
        return 2
    micro, accumulation, global_batch = (ds["train_micro_batch_size_per_gpu"],
                                         ds["gradient_accumulation_steps"], ds["train_batch_size"])
    zero = ds.get("zero_optimization", {}).get("stage")
    precision = "bf16" if ds.get("bf16", {}).get("enabled") else "fp32"
    layout = f"TP {tp} x PP {pp} x DP {dp}" if sp == 1 else f"SP {sp} x DP {dp} (each sample on {sp} ranks)"
    print(f"preflight: model {args.model}, {nodes} node(s) x {world_size // nodes} ranks = {world_size}; "
          f"{layout}; ZeRO-{zero}, {precision}", file=sys.stderr)
    print(f"preflight: global batch {global_batch} = micro {micro} x accumulation {accumulation} x DP {dp} "
          f"sequences of {args.seq_length} bases", file=sys.stderr)
    if pp > 1 and accumulation < 2 * pp:
        print(f"preflight: note: {accumulation} micro-batches per step through {pp} pipeline stages leaves "
              f"a large 1F1B bubble; a smaller MICRO_BATCH raises the count", file=sys.stderr)
    if has_cuda:
        name = torch.cuda.get_device_name()
        from megamerge.training.peak_flops import peak_flops_per_device

        peak = peak_flops_per_device(args.peak_tflops, name)
        if peak:
            hours = estimated_hours(args.model, args.seq_length, global_batch,
                                    max(args.train_iters - start_iteration, 0), world_size, peak)
            print(f"preflight: {args.train_iters - start_iteration} iterations left, about {hours:.1f} h on "
                  f"{world_size} x {name} at {ASSUMED_MFU:.0%} MFU", file=sys.stderr)
    print(" ".join(extra))
    return 0


def table(model: str, ds_config: str, micro: int | None, gpus_per_node: int, tp: int, pp: int,
          seq_length: int, global_batch: int, iters: int) -> None:
    config_micro = micro or json.loads(Path(ds_config).read_text())["train_micro_batch_size_per_gpu"]
    print("| nodes | GPUs | TP x PP x DP | micro | accumulation | global batch "
          f"| est. time ({iters // 1000}k iters) |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for nodes in (1, 2, 4, 8, 16, 32):
        gpus = nodes * gpus_per_node
        dp = gpus // (tp * pp)
        micro = plan_micro_batch(config_micro, global_batch, dp)
        if global_batch % (micro * dp):
            print(f"| {nodes} | {gpus} | {tp} x {pp} x {dp} | - | - | {global_batch} | not divisible |")
            continue
        hours = estimated_hours(model, seq_length, global_batch, iters, gpus)
        when = f"{hours / 24:.1f} d" if hours >= 48 else f"{hours:.0f} h"
        print(f"| {nodes} | {gpus} | {tp} x {pp} x {dp} | {micro} | {global_batch // (micro * dp)} "
              f"| {global_batch} | {when} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world-size", type=int)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--start-iteration", type=int, default=0)
    p.add_argument("--table", action="store_true", help="print the README's scaling table")
    p.add_argument("--model", default="380m")
    p.add_argument("--ds-config", default="ds_configs/zero2.json")
    p.add_argument("--micro-batch", type=int, default=None)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--seq-length", type=int, default=4096)
    p.add_argument("--global-batch", type=int, default=256)
    p.add_argument("--train-iters", type=int, default=100_000)
    p.add_argument("train_argv", nargs=argparse.REMAINDER)
    a = p.parse_args()
    if a.table:
        table(a.model, a.ds_config, a.micro_batch, a.gpus_per_node, a.tp, a.pp, a.seq_length, a.global_batch,
              a.train_iters)
        return 0
    if a.world_size is None or not a.train_argv or a.train_argv[0] != "--":
        p.error("give --world-size N -- <train.py flags>, or --table")
    return preflight(a.world_size, a.nodes, a.start_iteration, a.train_argv[1:])


if __name__ == "__main__":
    sys.exit(main())
