#!/bin/bash
# MergeDNA-380M pre-training, the paper's recipe: global batch 256 x 4096 bases, 100k iterations,
# AdamW lr 1e-4 with 10k warm-up then cosine. One rank per GPU; any number of 8-GPU nodes:
#
#   sbatch slurm/pretrain_380m.sh                       # 1 node: accumulation 4
#   sbatch --nodes=4 slurm/pretrain_380m.sh             # 4 nodes: accumulation 1, same global batch
#   sbatch --export=ALL,DATA=/lustre/corpus,RUN_NAME=exp7 slurm/pretrain_380m.sh
#
# Submit from the checkout (or set MEGAMERGE_HOME); the per-job log goes to slurm/logs/<name>-<jobid>.out.
# Resubmitting with the same RUN_NAME continues the run from SAVE/latest.
#
# Overrides: any variable below, from the environment (`sbatch --export=ALL,VAR=value,...`).
# Relative paths are relative to the checkout.
#   MODEL=380m                     preset: tiny | 380m | 1b | 3b | 7b
#   DATA=data/corpus               prepared corpus (data_prep/prepare.py --out); DATA=mock: generated on the fly
#   RUN_NAME=mergedna-380m         names the checkpoint directory
#   SAVE=checkpoints/$RUN_NAME     checkpoints, metrics.jsonl, exit_status.json; resumed from automatically
#   DS_CONFIG=ds_configs/zero2.json
#   TRAIN_ITERS=100000
#   GLOBAL_BATCH=256               sequences per optimizer step, on any node count
#   MICRO_BATCH=                   per rank; empty: DS_CONFIG's, lowered when micro x DP > GLOBAL_BATCH
#   SEQ_LENGTH=4096
#   GPUS_PER_NODE=8                ranks per node, one per GPU (CPU nodes: processes per node)
#   TP=1  PP=1                     tensor / pipeline parallel sizes
#   LR=1e-4  MIN_LR=0  WARMUP_ITERS=10000
#   SAVE_INTERVAL=1000  EVAL_INTERVAL=1000  EVAL_ITERS=10  LOG_INTERVAL=10
#   NUM_WORKERS=2                  data-loader workers per rank
#   TENSORBOARD_DIR=$SAVE/tensorboard   (none: off)
#   EXTRA_ARGS=                    more train.py flags, word-split (see `megamerge/train.py --help`)
#   Launcher and site settings (PYTHON, SITE_ENV, SRUN_ARGS, MASTER_PORT, REQUEUE, ...): slurm/common.sh.
#
# Preemption: SLURM sends USR1 to every rank 10 minutes before the time limit (and `scancel
# --signal=USR1 <job>` does the same at any time); train.py saves a checkpoint at the next iteration
# and exits, and this script then requeues the job, which resumes from that checkpoint.
#
#SBATCH --job-name=mm-380m
#SBATCH --nodes=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm/logs/%x-%j.out

set -euo pipefail

: "${MODEL:=380m}"
: "${DATA:=data/corpus}"
: "${RUN_NAME:=mergedna-380m}"
: "${SAVE:=checkpoints/$RUN_NAME}"
: "${DS_CONFIG:=ds_configs/zero2.json}"
: "${TRAIN_ITERS:=100000}"
: "${GLOBAL_BATCH:=256}"
: "${MICRO_BATCH:=}"
: "${SEQ_LENGTH:=4096}"
: "${GPUS_PER_NODE:=8}"
: "${TP:=1}" "${PP:=1}"
: "${LR:=1e-4}" "${MIN_LR:=0}" "${WARMUP_ITERS:=10000}"
: "${SAVE_INTERVAL:=1000}" "${EVAL_INTERVAL:=1000}" "${EVAL_ITERS:=10}" "${LOG_INTERVAL:=10}"
: "${NUM_WORKERS:=2}"
: "${TENSORBOARD_DIR:=$SAVE/tensorboard}"
: "${EXTRA_ARGS:=}"

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
