#!/bin/bash
# MergeDNA-1B pre-training (preset 1b: D = 1536, 4 / 24 / 4 / 2 blocks, ~1.0B parameters) with the
# paper's recipe: global batch 256 x 4096 bases, 100k iterations. Layout (megamerge/parallel/README.md):
#   TP=2  tensor parallel inside a node (NVLink): halves the latent blocks' activations;
#   PP=1, ZeRO-1 (ds_configs/zero1_pp.json: bf16 + ZeRO-1; its pipeline section is unused at PP=1);
#   micro-batch 8 with activation checkpointing: ~11 GB per A100-80G (tools/estimate_memory.py).
# One rank per GPU; any number of 8-GPU nodes (DP = world / 2):
#
#   sbatch slurm/pretrain_1b.sh                         # 1 node: DP 4, accumulation 8
#   sbatch --nodes=8 slurm/pretrain_1b.sh               # 8 nodes: DP 32, accumulation 1
#
# Submit from the checkout (or set MEGAMERGE_HOME); the per-job log goes to slurm/logs/<name>-<jobid>.out.
# Resubmitting with the same RUN_NAME continues the run from SAVE/latest.
#
# Overrides: any variable below, from the environment (`sbatch --export=ALL,VAR=value,...`).
# Relative paths are relative to the checkout.
#   MODEL=1b                       preset: tiny | 380m | 1b | 3b | 7b
#   DATA=data/corpus               prepared corpus (data_prep/prepare.py --out); DATA=mock: generated on the fly
#   RUN_NAME=mergedna-1b           names the checkpoint directory
#   SAVE=checkpoints/$RUN_NAME     checkpoints, metrics.jsonl, exit_status.json; resumed from automatically
#   DS_CONFIG=ds_configs/zero1_pp.json
#   TRAIN_ITERS=100000
#   GLOBAL_BATCH=256               sequences per optimizer step, on any node count
#   MICRO_BATCH=8                  per rank (empty: DS_CONFIG's, lowered when micro x DP > GLOBAL_BATCH)
#   SEQ_LENGTH=4096
#   GPUS_PER_NODE=8                ranks per node, one per GPU (CPU nodes: processes per node)
#   TP=2  PP=1                     tensor / pipeline parallel sizes (TP x PP must divide the world size)
#   LR=1e-4  MIN_LR=0  WARMUP_ITERS=10000
#   SAVE_INTERVAL=1000  EVAL_INTERVAL=1000  EVAL_ITERS=10  LOG_INTERVAL=10
#   NUM_WORKERS=2                  data-loader workers per rank
#   TENSORBOARD_DIR=$SAVE/tensorboard   (none: off)
#   EXTRA_ARGS=--checkpoint-activations   more train.py flags, word-split (see `megamerge/train.py --help`)
#   Launcher and site settings (PYTHON, SITE_ENV, SRUN_ARGS, MASTER_PORT, REQUEUE, ...): slurm/common.sh.
#
# Preemption: SLURM sends USR1 to every rank 10 minutes before the time limit (and `scancel
# --signal=USR1 <job>` does the same at any time); train.py saves a checkpoint at the next iteration
# and exits, and this script then requeues the job, which resumes from that checkpoint.
#
#SBATCH --job-name=mm-1b
#SBATCH --nodes=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --time=48:00:00
#SBATCH --signal=USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm/logs/%x-%j.out

set -euo pipefail

: "${MODEL:=1b}"
: "${DATA:=data/corpus}"
: "${RUN_NAME:=mergedna-1b}"
: "${SAVE:=checkpoints/$RUN_NAME}"
: "${DS_CONFIG:=ds_configs/zero1_pp.json}"
: "${TRAIN_ITERS:=100000}"
: "${GLOBAL_BATCH:=256}"
: "${MICRO_BATCH=8}"  # `=` not `:=`: MICRO_BATCH= (empty) means the config's
: "${SEQ_LENGTH:=4096}"
: "${GPUS_PER_NODE:=8}"
: "${TP:=2}" "${PP:=1}"
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
