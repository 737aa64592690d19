#!/bin/bash
# A fine-tuning suite (tools/evaluate_suite.py) as a SLURM job array: one task directory per array
# element, then a summary job that starts when the whole array has ended and writes OUT/summary.md.
#
#   bash slurm/finetune_suite.sh                 # submit: counts the tasks, submits the array + summary
#   MODEL=portable/380m TASKS=/data/GUE OUT=runs/gue-380m FINETUNE_ARGS="--method lora --seeds 3" \
#       bash slurm/finetune_suite.sh
#   SBATCH_ARGS="--partition=gpu --account=dna" bash slurm/finetune_suite.sh
#
# Run it with bash, not sbatch: the array's size is the number of tasks under TASKS, known only after
# looking, and the summary job depends on the array's id. The script then submits itself twice; the
# array elements and the summary job run this same file under SLURM (SUITE_STEP tells them apart).
# Resubmitting the same command finishes a partly done suite: every element skips the runs whose
# results.json exists, and evaluate_suite refuses to mix other settings into the same OUT.
#
# Settings, from the environment (relative paths are relative to the checkout):
#   MODEL=portable/model           portable model directory (tools/convert_checkpoint.py --out)
#   TASKS=data/benchmarks/GUE      task tree: every directory with train, dev and test files is a task
#   OUT=runs/finetune-suite        results per arm and task, summary.json, summary.md
#   COMPARE_SCRATCH=1              1: also fine-tune the same architecture from random initialisation
#   FINETUNE_ARGS=                 tools/finetune.py flags, word-split, e.g. "--method lora --lr 1e-4 --seeds 3"
#   HEADLINE=tasks                 suite mean printed first: tasks (mean over tasks) | groups (mean of group means)
#   GPUS_PER_NODE=1                ranks per array element; > 1 launches finetune.py with srun, data-parallel
#   MAX_PARALLEL=                  at most this many array elements at once (sbatch --array=...%N); empty: no cap
#   LOG_DIR=slurm/logs             per-job logs (created if missing)
#   SBATCH_ARGS=                   more sbatch flags for both submissions, word-split (partition, account, QOS,
#                                  --gpus-per-node=0 --cpus-per-task=N on CPU-only nodes)
#   Launcher and site settings (PYTHON, SITE_ENV, SRUN_ARGS, ...): slurm/common.sh.
#
# Logs: LOG_DIR/mm-finetune-<arrayid>_<index>.out per task, LOG_DIR/mm-finetune-summary-<jobid>.out for the
# summary; each run's own output is in OUT/<arm>/<task>/finetune.log.
# The #SBATCH lines below are each array element's request (one node, GPUS_PER_NODE ranks of 8 CPUs and
# one GPU each); flags in SBATCH_ARGS come later on the sbatch command line and win.
#
#SBATCH --job-name=mm-finetune
#SBATCH --nodes=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=08:00:00
#SBATCH --output=slurm/logs/%x-%A_%a.out

set -euo pipefail

: "${MODEL:=portable/model}"
: "${TASKS:=data/benchmarks/GUE}"
: "${OUT:=runs/finetune-suite}"
: "${COMPARE_SCRATCH:=1}"
: "${FINETUNE_ARGS:=}"
: "${HEADLINE:=tasks}"
: "${GPUS_PER_NODE:=1}"
: "${MAX_PARALLEL:=}"
: "${SBATCH_ARGS:=}"
: "${LOG_DIR:=slurm/logs}"
: "${SUITE_STEP:=submit}"

# SLURM runs a spool copy of this script, so its own path is not in the checkout: use
# MEGAMERGE_HOME, else the submit directory (or its parent, when submitted from slurm/).
if [[ -z ${MEGAMERGE_HOME:-} ]]; then
    for MEGAMERGE_HOME in "${SLURM_SUBMIT_DIR:-$PWD}" "${SLURM_SUBMIT_DIR:-$PWD}/.." "$(dirname "$0")/.."; do
        [[ -f $MEGAMERGE_HOME/slurm/common.sh ]] && break
    done
fi
[[ -f $MEGAMERGE_HOME/slurm/common.sh ]] || { echo "megamerge checkout not found: set MEGAMERGE_HOME" >&2; exit 1; }
MEGAMERGE_HOME=$(cd "$MEGAMERGE_HOME" && pwd)
export MEGAMERGE_HOME
source "$MEGAMERGE_HOME/slurm/common.sh"

suite_args() {
    local -a args=(--model "$(mm_abspath "$MODEL")" --tasks "$(mm_abspath "$TASKS")" --out "$(mm_abspath "$OUT")"
                   --headline "$HEADLINE" --no-progress)
    [[ $COMPARE_SCRATCH == 1 ]] && args+=(--compare-scratch)
    printf '%s\n' "${args[@]}"
}

submit() {
    [[ -z ${SLURM_JOB_ID:-} ]] || mm_die "SUITE_STEP=submit inside job $SLURM_JOB_ID: run \`bash slurm/finetune_suite.sh\`, not sbatch"
    PYTHON=${PYTHON:-$MEGAMERGE_HOME/.venv/bin/python}
    local count
    count=$("$PYTHON" "$MEGAMERGE_HOME/tools/evaluate_suite.py" --tasks "$(mm_abspath "$TASKS")" --list-tasks | wc -l)
    ((count > 0)) || mm_die "no tasks under TASKS=$TASKS"
    [[ -f $(mm_abspath "$MODEL")/config.json ]] || mm_die "MODEL=$MODEL has no config.json (a portable model directory)"
    local logs
    logs=$(mm_abspath "$LOG_DIR")
    mkdir -p "$logs"  # SLURM does not create it: a job whose log directory is missing fails without a log
    local -a extra
    read -r -a extra <<<"$SBATCH_ARGS"
    local array=0-$((count - 1))${MAX_PARALLEL:+%$MAX_PARALLEL}
    local array_id summary_id
    array_id=$(cd "$MEGAMERGE_HOME" && sbatch --parsable --array="$array" --ntasks-per-node="$GPUS_PER_NODE" \
        --output="$logs/%x-%A_%a.out" "${extra[@]}" \
        --export=ALL,SUITE_STEP=task,MEGAMERGE_HOME="$MEGAMERGE_HOME" "$MEGAMERGE_HOME/slurm/finetune_suite.sh")
    array_id=${array_id%%;*}
    # afterany: the summary is written even when a task failed; it lists the missing runs and fails.
    summary_id=$(cd "$MEGAMERGE_HOME" && sbatch --parsable --dependency="afterany:$array_id" \
        --job-name=mm-finetune-summary --output="$logs/%x-%j.out" --ntasks-per-node=1 --gpus-per-node=0 \
        --cpus-per-task=1 "${extra[@]}" --export=ALL,SUITE_STEP=summary,MEGAMERGE_HOME="$MEGAMERGE_HOME" "$MEGAMERGE_HOME/slurm/finetune_suite.sh")
    summary_id=${summary_id%%;*}
    mm_log "submitted $count tasks as array job $array_id ($array) and summary job $summary_id after it"
    echo "$array_id $summary_id"
}

run_task() {
    megamerge_env
    local -a args launcher=()
    mapfile -t args < <(suite_args)
    if ((WORLD_SIZE > 1)); then
        local -a srun_args
        read -r -a srun_args <<<"${SRUN_ARGS:-}"
        launcher=(--launcher "srun --kill-on-bad-exit=1 --ntasks=$WORLD_SIZE --ntasks-per-node=$GPUS_PER_NODE --cpus-per-task=$CPUS_PER_TASK ${srun_args[*]} $PYTHON -u")
    fi
    local -a finetune_args
    read -r -a finetune_args <<<"$FINETUNE_ARGS"
    mm_log "array job ${SLURM_ARRAY_JOB_ID:-?} element ${SLURM_ARRAY_TASK_ID:?not an array element} on $(hostname): $WORLD_SIZE rank(s), OMP_NUM_THREADS=$OMP_NUM_THREADS"
    "$PYTHON" "$MEGAMERGE_HOME/tools/evaluate_suite.py" "${args[@]}" "${launcher[@]}" \
        --task-index "$SLURM_ARRAY_TASK_ID" "${finetune_args[@]}"
}

run_summary() {
    megamerge_env
    local -a args
    mapfile -t args < <(suite_args)
    mm_log "summary of $(mm_abspath "$OUT") after the array job"
    "$PYTHON" "$MEGAMERGE_HOME/tools/evaluate_suite.py" "${args[@]}" --summarize-only
}

case $SUITE_STEP in
    submit) submit ;;
    task) run_task ;;
    summary) run_summary ;;
    *) mm_die "SUITE_STEP=$SUITE_STEP: expected submit, task or summary" ;;
esac
