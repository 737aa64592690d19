#!/bin/bash
# MergeDNA-380M pre-training at long context (issue 30): N = 32,768 bases per sample with DeepSpeed-Ulysses
# sequence parallelism, SP = 8 GPUs per sample (--sequence-parallel-size) on one 8-GPU node:
#   SP=8   the 8 ranks of a node share each sample: every Transformer block runs on 1/8 of its tokens
#          (local-window blocks with a halo of `window` tokens each side), the full-attention latent
#          blocks exchange q/k/v by all-to-all (n_heads / 8 heads per rank); parameters replicated;
#   ZeRO-2 over the DP x SP ranks (ds_configs/zero2.json), TP = PP = 1 (SP composes with DP and ZeRO only);
#   micro-batch 1, activation checkpointing: ~5.2 GiB per GPU, 13 GiB without checkpointing
#          (`tools/estimate_memory.py --model 380m --seq-length 32768 --sp 8`);
#   global batch 32 x 32,768 bases = 1,048,576 bases per step, the paper's 256 x 4096 kept in bases
#          (not in sequences); 100k iterations, AdamW lr 1e-4 with 10k warm-up then cosine, as the paper.
# About 12 days on one node of 8 x A100 at 40% MFU (slurm/preflight.py's estimate, which leaves out
# the all-to-all and all-gather traffic). DP = world / SP:
#
#   sbatch slurm/pretrain_380m_long.sh                  # 1 node: SP 8 x DP 1, accumulation 32
#   sbatch --nodes=4 slurm/pretrain_380m_long.sh        # 4 nodes: SP 8 x DP 4, accumulation 8
#   sbatch --export=ALL,SP=4 slurm/pretrain_380m_long.sh      # SP 4 x DP 2 per node (more memory per GPU)
#
# The corpus must be prepared at this length: data_prep/prepare.py --seq-len 32768 --out data/corpus-32k
# (or slurm/prepare_corpus.sh with PREPARE_ARGS="--seq-len 32768"). SP must divide the model's n_heads
# (16 for 380m); the layout is checked by slurm/preflight.py with train.py's own rules before any rank starts.
#
# Submit from the checkout (or set MEGAMERGE_HOME); the per-job log goes to slurm/logs/<name>-<jobid>.out.
# Resubmitting with the same RUN_NAME continues the run from SAVE/latest.
#
# Overrides: any variable below, from the environment (`sbatch --export=ALL,VAR=value,...`).
# Relative paths are relative to the checkout.
#   MODEL=380m                     preset: tiny | 380m | 1b | 3b | 7b
#   DATA=data/corpus-32k           prepared corpus at --seq-len SEQ_LENGTH; DATA=mock: generated on the fly
#   RUN_NAME=mergedna-380m-32k     names the checkpoint directory
#   SAVE=checkpoints/$RUN_NAME     checkpoints, metrics.jsonl, exit_status.json; resumed from automatically
#   DS_CONFIG=ds_configs/zero2.json
#   TRAIN_ITERS=100000
#   GLOBAL_BATCH=32                sequences per optimizer step, on any node count
#   MICRO_BATCH=1                  per rank (empty: DS_CONFIG's, lowered when micro x DP > GLOBAL_BATCH)
#   SEQ_LENGTH=32768
#   GPUS_PER_NODE=8                ranks per node, one per GPU (CPU nodes: processes per node)
#   SP=8                           sequence-parallel size: ranks per sample (--sequence-parallel-size)
#   TP=1  PP=1                     tensor / pipeline parallel sizes: must stay 1 with SP > 1
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
#SBATCH --job-name=mm-380m-long
#SBATCH --nodes=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --time=48:00:00
#SBATCH --signal=USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm/logs/%x-%j.out

set -euo pipefail

: "${MODEL:=380m}"
: "${DATA:=data/corpus-32k}"
: "${RUN_NAME:=mergedna-380m-32k}"
: "${SAVE:=checkpoints/$RUN_NAME}"
: "${DS_CONFIG:=ds_configs/zero2.json}"
: "${TRAIN_ITERS:=100000}"
: "${GLOBAL_BATCH:=32}"
: "${MICRO_BATCH=1}"  # `=` not `:=`: MICRO_BATCH= (empty) means the config's
: "${SEQ_LENGTH:=32768}"
: "${GPUS_PER_NODE:=8}"
: "${SP:=8}"
: "${TP:=1}" "${PP:=1}"
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
