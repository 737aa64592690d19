#!/usr/bin/env python
"""Fine-tune a portable megamerge model (MergeDNA or CARMANIA) on a supervised task; score it.

    python tools/finetune.py --model PORTABLE_DIR --task TASK_DIR --out OUT_DIR
    python tools/finetune.py --model portable/tiny --task GUE/tf/0 --out ft/tf0 --method lora --seeds 3
    python tools/finetune.py --model portable/tiny --task GUE/tf/0 --out ft/tf0-scratch --from-scratch
    torchrun --nproc-per-node 4 tools/finetune.py ...      # data-parallel (also deepspeed, srun)

TASK_DIR holds train, dev and test files (.csv, .tsv or .parquet) with a `sequence` and a `label`
column; GUE's layout works as is. Labels: integers or names (classification), other numbers
(regression), one digit per base or a list column (per-base classification).

--merge-decisions random or fixed swaps the trained tokenizer's merge decisions for a control's
(benchmarks/tokenizer_ablation.py); results.json's settings record what the model used.

Protocol: for each seed, train --epochs epochs, score dev after each, restore the best dev epoch and
score test once with it (never select on test). results.json reports every seed and the mean ± std of
the headline metric (MCC for classification and per-base, Pearson for regression).

Defaults follow the MergeDNA paper: AdamW, batch 32, LoRA on the Latent Encoder's attention and MLP
projections, the Local Encoder (the learned tokenizer) frozen, both decoders dropped for sequence
tasks, the fixed eval compression ratio. Output layout: megamerge/finetune/results.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megamerge.finetune.adapters import DEFAULT_TARGETS, METHODS
from megamerge.finetune.heads import POOLINGS
from megamerge.finetune.task_data import TASK_TYPES
from megamerge.models.common.config_options import declared_fields
from megamerge.models.mergedna.config import MergeDNAConfig

MERGE_DECISIONS = declared_fields(MergeDNAConfig)["merge_decisions"][1].choices


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="portable model directory (tools/convert_checkpoint.py)")
    p.add_argument("--task", required=True,
                   help="directory with train, dev and test .csv/.tsv/.parquet files")
    p.add_argument("--out", required=True, help="output directory (results.json, seed<k>/, tensorboard/)")
    p.add_argument("--method", default="lora", choices=METHODS,
                   help="lora: adapters + head (default); full: every weight; probe: the head on a "
                        "frozen backbone")
    p.add_argument("--lr", type=float, default=None,
                   help="AdamW learning rate, constant (default: lora 1e-4, full 5e-5, probe 1e-3; "
                        "the paper searches 1e-5, 5e-5, 1e-4)")
    p.add_argument("--epochs", type=int, default=5, help="epochs; dev is scored after each (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="global batch over all ranks (default 32)")
    p.add_argument("--eval-batch-size", type=int, default=64,
                   help="sequences per evaluation batch (default 64)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank r (default 8; the paper uses 4-48)")
    p.add_argument("--lora-alpha", type=float, default=16.0,
                   help="LoRA alpha; scaling = alpha / r (default 16)")
    p.add_argument("--target-modules", nargs="+", default=list(DEFAULT_TARGETS), metavar="NAME",
                   help="projections that get LoRA adapters, in every Latent Encoder block (CARMANIA: every "
                        f"block); default: {' '.join(DEFAULT_TARGETS)}")
    p.add_argument("--adapt-tokenizer", action="store_true",
                   help="LoRA on the Local Encoder too (its blocks and merge-scoring projections)")
    p.add_argument("--seeds", default="3",
                   help="a count (3 = seeds 0,1,2; default) or a list (0,1,2; '7,' = seed 7)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps in all")
    p.add_argument("--max-train-samples", type=int, default=None, help="use only the first N rows of train")
    p.add_argument("--from-scratch", action="store_true",
                   help="same architecture as --model, randomly initialised (the baseline)")
    p.add_argument("--pooling", default="mean_tokens", choices=POOLINGS,
                   help="sequence pooling: mean_tokens (each latent token once; default), mean_bases (tokens "
                        "weighted by the bases they cover), last (last position; CARMANIA)")
    p.add_argument("--task-type", default="auto", choices=("auto", *TASK_TYPES),
                   help="auto (default) decides from the train labels")
    p.add_argument("--sequence-column", default="sequence", help="column holding the DNA (default: sequence)")
    p.add_argument("--label-column", default="label", help="column holding the label (default: label)")
    p.add_argument("--eval-compression", type=float, default=None,
                   help="MergeDNA: the fixed tokens/bases ratio used in fine-tuning and test "
                        "(default: the model's eval_compression, 0.5)")
    p.add_argument("--merge-decisions", default=None, choices=MERGE_DECISIONS,
                   help="MergeDNA: which pairs the (frozen) Local Encoder merges, set on the loaded model: "
                        "learned (the trained tokenizer), random (chance pairs, the same counts per window), "
                        "fixed (chunks of N/L bases); the tokenizer ablation's controls "
                        "(benchmarks/tokenizer_ablation.py). Default: the model's own (learned)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    # The deepspeed launcher appends --local_rank=N; torchrun and srun use the environment instead.
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    if options.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(options.local_rank))
    from megamerge.finetune.run import FinetuneInputError, run

    try:
        record = run(options)
    except FinetuneInputError as e:
        print(f"finetune.py: error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) != "0":
        return 0
    seeds = ", ".join(f"{s['test'][record['metric']]:.4f}" for s in record["per_seed"])
    print(f"{record['task']} {record['method']}{' from scratch' if record['from_scratch'] else ''}: test "
          f"{record['metric']} {record['test_mean']:.4f} ± {record['test_std']:.4f} (seeds: {seeds}); "
          f"{record['train_sequences_per_s']:.1f} train seq/s, {record['wall_time_s']:.0f} s "
          f"-> {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
