#!/bin/bash
# MergeDNA-7B pre-training (preset 7b: LLaMA-7B widths, D = 4096, FFN 11008, ~6.9B parameters) with
# the paper's recipe: global batch 256 x 4096 bases, 100k iterations. Layout per 8 GPUs:
#   TP=4  tensor parallel inside a node (NVLink): the latent blocks' attention and FFN split 4 ways;
#   PP=2  two pipeline stages (the two halves of a node); DeepSpeed's pipeline engine needs ZeRO-1,
#         hence ds_configs/zero1_pp.json;
#   DP = world / 8 replicas; micro-batch 4 with activation checkpointing: ~18 GB per A100-80G
#   (tools/estimate_memory.py). The 1F1B bubble wants >= 8 micro-batches per step: beyond 8 nodes
#   (accumulation < 8) lower MICRO_BATCH to 2, then 1.
# Keep TP * PP = 8 = GPUS_PER_NODE so tensor-parallel groups never cross the inter-node fabric.
#
#   sbatch --nodes=8 slurm/pretrain_7b.sh               # 64 GPUs: DP 8, accumulation 8
#   sbatch --nodes=32 --export=ALL,MICRO_BATCH=1 slurm/pretrain_7b.sh   # 256 GPUs: DP 32, accumulation 8
#
# Submit from the checkout (or set MEGAMERGE_HOME); the per-job log goes to slurm/logs/<name>-<jobid>.out.
# Resubmitting with the same RUN_NAME continues the run from SAVE/latest (with the same node count:
# exact resume of the data stream needs the same layout).
#
# Overrides: any variable below, from the environment (`sbatch --export=ALL,VAR=value,...`).
# Relative paths are relative to the checkout.
#   MODEL=7b                       preset: tiny | 380m | 1b | 3b | 7b
#   DATA=data/corpus               prepared corpus (data_prep/prepare.py --out); DATA=mock: generated on the fly
#   RUN_NAME=mergedna-7b           names the checkpoint directory
#   SAVE=checkpoints/$RUN_NAME     checkpoints, metrics.jsonl, exit_status.json; resumed from automatically
#   DS_CONFIG=ds_configs/zero1_pp.json
#   TRAIN_ITERS=100000
#   GLOBAL_BATCH=256               sequences per optimizer step, on any node count
#   MICRO_BATCH=4                  per pipeline (empty: DS_CONFIG's, lowered when micro x DP > GLOBAL_BATCH)
#   SEQ_LENGTH=4096
#   GPUS_PER_NODE=8                ranks per node, one per GPU (CPU nodes: processes per node)
#   TP=4  PP=2                     tensor / pipeline parallel sizes (TP x PP must divide the world size)
#   LR=1e-4  MIN_LR=0  WARMUP_ITERS=10000
#   SAVE_INTERVAL=1000  EVAL_INTERVAL=1000  EVAL_ITERS=10  LOG_INTERVAL=10
#   NUM_WORKERS=2                  data-loader workers per rank
#   TENSORBOARD_DIR=$SAVE/tensorboard   (none: off)
#   EXTRA_ARGS=--checkpoint-activations   more train.py flags, word-split (see `megamerge/train.py --help`)
#   Launcher and site settings (PYTHON, SITE_ENV, SRUN_ARGS, MASTER_PORT, REQUEUE, ...): slurm/common.sh.
#
# Preemption: SLURM sends USR1 to every rank 15 minutes before the time limit (and `scancel
# --signal=USR1 <job>` does the same at any time); train.py saves a checkpoint at the next iteration
# and exits, and this script then requeues the job, which resumes from that checkpoint.
#
#SBATCH --job-name=mm-7b
#SBATCH --nodes=8
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --time=48:00:00
#SBATCH --signal=USR1@900
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm/logs/%x-%j.out

set -euo pipefail

: "${MODEL:=7b}"
: "${DATA:=data/corpus}"
: "${RUN_NAME:=mergedna-7b}"
: "${SAVE:=checkpoints/$RUN_NAME}"
: "${DS_CONFIG:=ds_configs/zero1_pp.json}"
: "${TRAIN_ITERS:=100000}"
: "${GLOBAL_BATCH:=256}"
: "${MICRO_BATCH=4}"  # `=` not `:=`: MICRO_BATCH= (empty) means the config's
: "${SEQ_LENGTH:=4096}"
: "${GPUS_PER_NODE:=8}"
: "${TP:=4}" "${PP:=2}"
: "${LR:=1e-4}" "${MIN_LR:=0}" "${WARMUP_ITERS:=10000}"
: "${SAVE_INTERVAL:=1000}" "${EVAL_INTERVAL:=1000}" "${EVAL_ITERS:=10}" "${LOG_INTERVAL:=10}"
: "${NUM_WORKERS:=2}"
: "${TENSORBOARD_DIR:=$SAVE/tensorboard}"
: "${EXTRA_ARGS=--checkpoint-activations}"

# SLURM runs a spool copy of this script, so its own path is not in the checkout: use
# MEGAMERGE_HOME, else the submit directory (or its parent, when submitted from slurm/).
if [[ -z ${MEGAMERGE_HOME:-} ]]; then
    for MEGAMERGE_HOME in "${SLURM_SUBMIT_DIR:-$PWD}" "${SLURM_SUBMIT_DIR:-$PWD}/.." "$(dirname "$0")/.."; do
        [[ -f $MEGAMERGE_HOME/slurm/common.sh ]] && break
    done
fi
[[ -f $MEGAMERGE_HOME/slurm/common.sh ]] || { echo "megamerge checkout not found: set MEGAMERGE_HOME" >&2; exit 1; }
MEGAMERGE_HOME=$(cd "$MEGAMERGE_HOME" && pwd)
source "$MEGAMERGE_HOME/slurm/common.sh"
megamerge_pretrain
