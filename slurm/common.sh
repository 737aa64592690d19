# shellcheck shell=bash
# Shared by every slurm/pretrain_*.sh template (sourced, never run): environment setup, the srun
# launch and the preemption/requeue protocol. Templates only set defaults and call megamerge_pretrain.
# SP (sequence-parallel size, --sequence-parallel-size) is passed only when a template or the
# environment sets it (pretrain_380m_long.sh: 8); unset, train.py's default of 1 applies.
#
# Launcher variables (all optional; the training settings are documented in each template):
#   MEGAMERGE_HOME  checkout to run from (the templates find it; see there)
#   PYTHON          interpreter for train.py          (default: $MEGAMERGE_HOME/.venv/bin/python)
#   SITE_ENV        file sourced first: `module load`, conda/container set-up, NCCL_* for the site
#                   (default: $MEGAMERGE_HOME/slurm/site.sh if it exists; see site.example.sh)
#   SRUN_ARGS       extra srun flags, word-split (e.g. pyxis: "--container-image=... --container-mounts=...")
#   MASTER_ADDR     rendezvous host                   (default: first host of the allocation)
#   MASTER_PORT     rendezvous port                   (default: derived from job id and restart count)
#   CPUS_PER_TASK   CPU cores per rank                (default: cores on the node / GPUS_PER_NODE)
#   REQUEUE         1: requeue after a signal-triggered checkpoint; 0: just exit   (default 1)
#   MAX_RESTARTS    refuse to requeue after this many restarts of the job          (default 50)
#
# Launch method: `srun` starts one task per GPU and train.py maps SLURM_PROCID / SLURM_LOCALID /
# SLURM_NTASKS to RANK / LOCAL_RANK / WORLD_SIZE before `deepspeed.init_distributed` (env://
# rendezvous at MASTER_ADDR:MASTER_PORT). Chosen over DeepSpeed's `--launcher slurm` + mpi4py because
#   * no MPI library has to match the site's SLURM/PMI build, and there is no extra launcher process:
#     slurmstepd owns every rank, so `--signal=USR1@T`, scancel, preemption and the time limit reach
#     the ranks directly, and `--kill-on-bad-exit` tears the whole job down when one rank dies;
#   * it is the pattern Megatron-DeepSpeed / GPT-NeoX / NeMo users already run and debug.

# ---------------------------------------------------------------------------------------------
# helpers

mm_log() { printf '[megamerge %(%F %T)T] %s\n' -1 "$*"; }
mm_die() { printf '[megamerge %(%F %T)T] error: %s\n' -1 "$*" >&2; exit 1; }

# Relative paths in overrides are relative to the checkout, wherever sbatch was run from.
mm_abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$MEGAMERGE_HOME/$1" ;;
    esac
}

# `global_stepN` of SAVE/latest -> N, or 0 when there is no checkpoint yet.
mm_latest_iteration() {
    local tag
    [[ -f $1/latest ]] || { echo 0; return; }
    tag=$(<"$1/latest")
    [[ $tag =~ ^global_step([0-9]+)$ ]] && echo "${BASH_REMATCH[1]}" || echo 0
}

# One field of SAVE/exit_status.json (written by train.py's rank 0 on every clean exit).
mm_status_field() {
    "$PYTHON" -c 'import json, sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]; print(str(v).lower() if isinstance(v, bool) else v)' "$1" "$2"
}

# ---------------------------------------------------------------------------------------------
# environment

megamerge_env() {
    [[ -n ${SLURM_JOB_ID:-} ]] || mm_die "not inside a SLURM job: submit with sbatch (or run inside salloc)"
    cd "$MEGAMERGE_HOME" || mm_die "cannot cd to MEGAMERGE_HOME=$MEGAMERGE_HOME"

    # Site hook first, so that `module load` / container set-up can provide PYTHON and NCCL_*.
    local site=${SITE_ENV:-$MEGAMERGE_HOME/slurm/site.sh}
    if [[ -f $site ]]; then
        mm_log "sourcing site environment $site"
        # shellcheck disable=SC1090
        source "$site"
    elif [[ -n ${SITE_ENV:-} ]]; then
        mm_die "SITE_ENV=$SITE_ENV does not exist"
    fi

    PYTHON=${PYTHON:-$MEGAMERGE_HOME/.venv/bin/python}
    if [[ $PYTHON == */* && ! -x $PYTHON ]]; then
        mm_die "PYTHON=$PYTHON is not executable: run \`make setup\` in $MEGAMERGE_HOME or set PYTHON"
    fi
    # train.py is run as a script; the checkout must win over any installed copy.
    export PYTHONPATH="$MEGAMERGE_HOME${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONUNBUFFERED=1

    NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
    WORLD_SIZE=$((NNODES * GPUS_PER_NODE))
    local cpus=${SLURM_CPUS_ON_NODE:-$(nproc)}
    if ((GPUS_PER_NODE < 1)); then mm_die "GPUS_PER_NODE=$GPUS_PER_NODE must be >= 1"; fi
    if ((cpus < GPUS_PER_NODE)); then
        mm_die "GPUS_PER_NODE=$GPUS_PER_NODE ranks per node but the job has only $cpus CPUs per node"
    fi
    if [[ -n ${SLURM_GPUS_ON_NODE:-} && ${SLURM_GPUS_ON_NODE} != 0 && ${SLURM_GPUS_ON_NODE} != "$GPUS_PER_NODE" ]]; then
        mm_log "warning: the job has $SLURM_GPUS_ON_NODE GPUs per node but GPUS_PER_NODE=$GPUS_PER_NODE ranks per node"
    fi
    CPUS_PER_TASK=${CPUS_PER_TASK:-$((cpus / GPUS_PER_NODE))}
    # Intra-op threads per rank: its share of the cores, not torch's default of all of them
    # (8 ranks x all cores oversubscribes the node and slows the data workers).
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$CPUS_PER_TASK}

    local hosts
    mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    ((${#hosts[@]} > 0)) || mm_die "scontrol show hostnames returned nothing for SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST"
    export MASTER_ADDR=${MASTER_ADDR:-${hosts[0]}}
    # Distinct per job and per restart, so neither a second job sharing the first node nor the
    # requeued incarnation (same job id) meets a port still held by the previous one.
    export MASTER_PORT=${MASTER_PORT:-$((20000 + (SLURM_JOB_ID * 7 + ${SLURM_RESTART_COUNT:-0}) % 40000))}

    # NCCL: fail the job when a rank dies instead of hanging in a collective until the time limit.
    # Fabric settings (NCCL_SOCKET_IFNAME, NCCL_IB_HCA, ...) are site-specific: put them in SITE_ENV.
    export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
    export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
}

# ---------------------------------------------------------------------------------------------
# launch

# The batch shell itself sees signals only with `--signal=B:...`, `scancel --batch/--full`,
# preemption, or the time limit. USR1 is forwarded to srun (which forwards it to every task), so
# B:USR1 works too; TERM means SLURM is ending the job (scancel, time limit, preemption), after
# which we must not requeue ourselves (SLURM requeues preempted jobs on its own).
_mm_forward() {
    local sig=$1
    [[ $sig == TERM ]] && MM_GOT_TERM=1
    mm_log "batch script received SIG$sig: forwarding it to the training tasks"
    if [[ -n ${MM_SRUN_PID:-} ]]; then
        kill -s "$sig" "$MM_SRUN_PID" 2>/dev/null || true
    fi
}

megamerge_pretrain() {
    MM_GOT_TERM=0
    MM_SRUN_PID=
    trap '_mm_forward USR1' USR1
    trap '_mm_forward TERM' TERM
    REQUEUE=${REQUEUE:-1}
    MAX_RESTARTS=${MAX_RESTARTS:-50}
    megamerge_env

    SAVE=$(mm_abspath "$SAVE")
    DS_CONFIG=$(mm_abspath "$DS_CONFIG")
    mkdir -p "$SAVE"

    local -a data_args extra_args tb_args micro_args sp_args
    if [[ $DATA == mock ]]; then
        data_args=(--mock-data)
    else
        DATA=$(mm_abspath "$DATA")
        [[ -d $DATA ]] || mm_die "DATA=$DATA is not a directory (prepare one with data_prep/prepare.py, or DATA=mock)"
        data_args=(--data "$DATA")
    fi
    [[ $TENSORBOARD_DIR == none ]] || tb_args=(--tensorboard-dir "$(mm_abspath "$TENSORBOARD_DIR")")
    [[ -z $MICRO_BATCH ]] || micro_args=(--micro-batch-size "$MICRO_BATCH")
    [[ -z ${SP:-} ]] || sp_args=(--sequence-parallel-size "$SP")
    read -r -a extra_args <<<"${EXTRA_ARGS:-}"

    # --load is always the run's own directory: train.py resumes from its `latest` (model,
    # optimizer, data position, RNG) and starts from scratch when there is none yet.
    local -a train_args=(
        --model "$MODEL" "${data_args[@]}" --seq-length "$SEQ_LENGTH"
        --global-batch-size "$GLOBAL_BATCH" "${micro_args[@]}"
        --train-iters "$TRAIN_ITERS" --lr "$LR" --min-lr "$MIN_LR" --lr-warmup-iters "$WARMUP_ITERS"
        --save "$SAVE" --load "$SAVE" --save-interval "$SAVE_INTERVAL"
        --eval-interval "$EVAL_INTERVAL" --eval-iters "$EVAL_ITERS" --log-interval "$LOG_INTERVAL"
        "${tb_args[@]}" --num-workers "$NUM_WORKERS"
        --tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP" "${sp_args[@]}"
        --ds_config "$DS_CONFIG" "${extra_args[@]}"
    )

    local start_iter restarts=${SLURM_RESTART_COUNT:-0}
    start_iter=$(mm_latest_iteration "$SAVE")
    mm_log "job $SLURM_JOB_ID (${SLURM_JOB_NAME:-}) restart $restarts on $NNODES node(s): $SLURM_JOB_NODELIST"
    mm_log "checkout $MEGAMERGE_HOME ($(git -C "$MEGAMERGE_HOME" describe --always --dirty 2>/dev/null || echo 'not a git checkout'))"
    mm_log "ranks: $NNODES x $GPUS_PER_NODE = $WORLD_SIZE, $CPUS_PER_TASK CPUs and OMP_NUM_THREADS=$OMP_NUM_THREADS each; rendezvous $MASTER_ADDR:$MASTER_PORT"
    if ((start_iter > 0)); then
        mm_log "resuming $SAVE from $(<"$SAVE/latest") (iteration $start_iter of $TRAIN_ITERS)"
    else
        mm_log "no checkpoint in $SAVE yet: starting run $RUN_NAME from scratch"
    fi

    # Validate flags, DeepSpeed config and batch arithmetic once on the batch node, before
    # $WORLD_SIZE ranks start; prints the layout and may lower the micro-batch (see preflight.py).
    local plan
    plan=$("$PYTHON" "$MEGAMERGE_HOME/slurm/preflight.py" --world-size "$WORLD_SIZE" --nodes "$NNODES" \
        --start-iteration "$start_iter" -- "${train_args[@]}") || mm_die "preflight failed (see above); nothing launched"
    if [[ -n $plan ]]; then
        local -a plan_args
        read -r -a plan_args <<<"$plan"
        train_args+=("${plan_args[@]}")
    fi

    rm -f "$SAVE/exit_status.json"  # whatever is there afterwards was written by this run
    local -a srun_args
    read -r -a srun_args <<<"${SRUN_ARGS:-}"
    mm_log "srun $PYTHON -u megamerge/train.py ${train_args[*]}"
    # --kill-on-bad-exit: one dead rank ends the step instead of leaving the others in a collective.
    srun --kill-on-bad-exit=1 --nodes="$NNODES" --ntasks="$WORLD_SIZE" --ntasks-per-node="$GPUS_PER_NODE" \
        --cpus-per-task="$CPUS_PER_TASK" --export=ALL "${srun_args[@]}" \
        "$PYTHON" -u "$MEGAMERGE_HOME/megamerge/train.py" "${train_args[@]}" &
    MM_SRUN_PID=$!
    local rc
    while :; do
        # A trapped signal interrupts `wait` while srun runs on; wait again until it has exited.
        wait "$MM_SRUN_PID" && rc=0 || rc=$?
        kill -0 "$MM_SRUN_PID" 2>/dev/null || break
    done
    MM_SRUN_PID=
    trap - USR1 TERM

    if ((rc != 0)); then
        mm_log "training failed (srun exit $rc): not requeueing; see the rank output above"
        exit "$rc"
    fi
    local status=$SAVE/exit_status.json
    [[ -f $status ]] || mm_die "srun exited 0 but $status was not written"
    local finished reason iteration consumed
    finished=$(mm_status_field "$status" finished)
    reason=$(mm_status_field "$status" reason)
    iteration=$(mm_status_field "$status" iteration)
    consumed=$(mm_status_field "$status" consumed_samples)
    mm_log "train.py stopped at iteration $iteration/$TRAIN_ITERS ($consumed samples): $reason"
    if [[ $finished == true ]]; then
        mm_log "run $RUN_NAME finished; checkpoint $SAVE/$(<"$SAVE/latest")"
        exit 0
    fi
    if [[ $reason != signal* ]]; then
        mm_log "stopped deliberately ($reason): not requeueing; resubmit the same command to continue"
        exit 0
    fi
    if ((MM_GOT_TERM)); then
        mm_log "SLURM is ending this job (SIGTERM): checkpoint saved, leaving any requeue to SLURM"
        exit 0
    fi
    if [[ $REQUEUE != 1 ]]; then
        mm_log "REQUEUE=$REQUEUE: not requeueing; resubmit the same command to continue from the checkpoint"
        exit 0
    fi
    if ((iteration <= start_iter)); then
        # Signalled again before a single iteration: requeueing would loop forever (e.g. a time
        # limit shorter than the --signal lead time).
        mm_die "no progress in this job (iteration $iteration, started at $start_iter): not requeueing"
    fi
    if ((restarts >= MAX_RESTARTS)); then
        mm_die "job already restarted $restarts times (MAX_RESTARTS=$MAX_RESTARTS): not requeueing"
    fi
    mm_log "requeueing job $SLURM_JOB_ID: the next start resumes from $(<"$SAVE/latest")"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
}
