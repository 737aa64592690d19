#!/bin/bash
# Prepare a corpus on many nodes: data_prep/prepare.py --part K/N as a SLURM job array (one part of the
# input files per element, each writing its own store groups and shards), then a merge job that starts
# when the whole array has ended and joins the parts into OUT with data_prep/merge_parts.py (one store,
# one manifest, the accounting identity checked over the whole corpus).
#
#   INPUT=/data/refseq OUT=data/corpus PARTS=16 PREPARE_ARGS="--seq-len 4096 --valid-frac 0.01" \
#       bash slurm/prepare_corpus.sh
#   SBATCH_ARGS="--partition=cpu --account=dna" MAX_PARALLEL=8 bash slurm/prepare_corpus.sh
#
# Run it with bash, not sbatch: the merge job depends on the array's id. The script submits itself
# twice; the array elements and the merge job run this same file under SLURM (PREPARE_STEP tells them
# apart). The result equals one `prepare.py --input INPUT --out OUT PREPARE_ARGS` run: the same store,
# the same samples under the same keys, the same accounting; only which shard file holds a sample differs.
#
# Settings, from the environment (relative paths are relative to the checkout):
#   INPUT=data/genomes        FASTA files or directories of them, word-split (prepare.py --input)
#   INPUT_LIST=               a file naming one input per line, instead of INPUT (paths may hold spaces)
#   OUT=data/corpus           the corpus directory the merge writes
#   PARTS=4                   array elements; input files are dealt to them by size (prepare.py --part K/N)
#   PREPARE_ARGS=             more prepare.py flags, word-split, the same for every part, e.g. "--seq-len 4096"
#   PARTS_DIR=                where the parts are written, one folder per submission (default: OUT.parts)
#   KEEP_PARTS=0              1: keep the parts after a successful merge (the corpus shares their files)
#   OVERWRITE=0               1: the merge replaces an existing corpus at OUT (prepare.py's --overwrite rules)
#   INPUT_CHECK=sha256        how the merge proves each input is the file its part read: sha256 or size
#   MAX_PARALLEL=             at most this many parts at once (sbatch --array=...%N); empty: no cap
#   RESUME=                   the array job id of an earlier submission: rerun only its unfinished parts, then merge
#   LOG_DIR=slurm/logs        per-job logs (created if missing)
#   SBATCH_ARGS=              more sbatch flags for both submissions, word-split (partition, account, --mem)
#   Site settings (PYTHON, SITE_ENV): slurm/common.sh.
#
# Logs: LOG_DIR/mm-prepare-<arrayid>_<K>.out per part, LOG_DIR/mm-prepare-merge-<jobid>.out for the merge.
# Parts go to PARTS_DIR/<arrayid>/part-K-of-N, fresh for every submission, so a merge never picks up a
# part of an earlier one. A failed part fails the merge with its name; once its cause is fixed,
# RESUME=<arrayid> with the same settings reruns only the parts that did not finish (into the same
# folder) and merges again, where a plain resubmission would redo every part. merge_parts.py refuses
# parts whose inputs or settings differ, so a resumed corpus is the one a single run makes.
# The #SBATCH lines below are each element's request (one process; prepare.py parses and cuts on one
# core, compression in zarr's threads takes a second); SBATCH_ARGS come later on the command line and win.
#
#SBATCH --job-name=mm-prepare
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --time=24:00:00
#SBATCH --output=slurm/logs/%x-%A_%a.out

set -euo pipefail

: "${INPUT:=data/genomes}"
: "${INPUT_LIST:=}"
: "${OUT:=data/corpus}"
: "${PARTS:=4}"
: "${PREPARE_ARGS:=}"
: "${PARTS_DIR:=}"
: "${KEEP_PARTS:=0}"
: "${OVERWRITE:=0}"
: "${INPUT_CHECK:=sha256}"
: "${MAX_PARALLEL:=}"
: "${RESUME:=}"
: "${SBATCH_ARGS:=}"
: "${LOG_DIR:=slurm/logs}"
: "${PREPARE_STEP:=submit}"

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

OUT=$(mm_abspath "$OUT")
PARTS_DIR=$(mm_abspath "${PARTS_DIR:-$OUT.parts}")

# prepare.py's inputs, one per line, absolute.
inputs() {
    local -a items
    if [[ -n $INPUT_LIST ]]; then
        mapfile -t items < <(grep -v '^[[:space:]]*$' "$(mm_abspath "$INPUT_LIST")")
    else
        read -r -a items <<<"$INPUT"
    fi
    local item
    for item in "${items[@]}"; do mm_abspath "$item"; done
}

part_dir() {  # part K of the array job $1
    printf '%s/%s/part-%d-of-%d\n' "$PARTS_DIR" "$1" "$2" "$PARTS"
}

unfinished_parts() {  # the numbers of the parts of array job $1 without a published part (prepare.py publishes whole)
    local part
    for ((part = 1; part <= PARTS; part++)); do
        [[ -f $(part_dir "$1" "$part")/manifest.json ]] || echo "$part"
    done
}

submit() {
    [[ -z ${SLURM_JOB_ID:-} ]] || mm_die "PREPARE_STEP=submit inside job $SLURM_JOB_ID: run \`bash slurm/prepare_corpus.sh\`, not sbatch"
    [[ $PARTS =~ ^[1-9][0-9]*$ ]] || mm_die "PARTS=$PARTS: expected a positive number of array elements"
    [[ $INPUT_CHECK == sha256 || $INPUT_CHECK == size ]] || mm_die "INPUT_CHECK=$INPUT_CHECK: expected sha256 or size"
    [[ -z $INPUT_LIST || -f $(mm_abspath "$INPUT_LIST") ]] || mm_die "INPUT_LIST=$INPUT_LIST is not a file"
    local -a given
    mapfile -t given < <(inputs)
    ((${#given[@]} > 0)) || mm_die "no inputs: set INPUT or INPUT_LIST"
    local item
    for item in "${given[@]}"; do
        [[ -e $item ]] || mm_die "input $item does not exist"
    done
    local logs
    logs=$(mm_abspath "$LOG_DIR")
    mkdir -p "$logs" "$PARTS_DIR"  # SLURM does not create the log directory: a job without one fails silently
    local -a extra rerun=()
    read -r -a extra <<<"$SBATCH_ARGS"
    local parts_of=""  # the array job whose folder the parts go to: this submission's, or RESUME's
    local array=1-$PARTS
    if [[ -n $RESUME ]]; then
        [[ $RESUME =~ ^[0-9]+$ ]] || mm_die "RESUME=$RESUME: expected the array job id an earlier submission printed"
        [[ -d $PARTS_DIR/$RESUME ]] || mm_die "RESUME=$RESUME: no parts of that array job in $PARTS_DIR (same PARTS_DIR as then?)"
        if squeue -h -j "$RESUME" -o %i 2>/dev/null | grep -q .; then
            mm_die "RESUME=$RESUME: that array job still has parts queued or running; resume once it has ended"
        fi
        parts_of=$RESUME
        mapfile -t rerun < <(unfinished_parts "$RESUME")
        array=$(IFS=,; echo "${rerun[*]}")
    fi
    local array_id=none merge_id dependency=()
    if [[ -z $RESUME || -n $array ]]; then
        array_id=$(cd "$MEGAMERGE_HOME" && sbatch --parsable --array="$array${MAX_PARALLEL:+%$MAX_PARALLEL}" \
            --output="$logs/%x-%A_%a.out" "${extra[@]}" \
            --export=ALL,PREPARE_STEP=part,PARTS_OF="$parts_of",MEGAMERGE_HOME="$MEGAMERGE_HOME" \
            "$MEGAMERGE_HOME/slurm/prepare_corpus.sh")
        array_id=${array_id%%;*}
        # afterany: the merge runs even when a part failed, and names the missing part instead of waiting forever.
        dependency=(--dependency="afterany:$array_id")
    fi
    merge_id=$(cd "$MEGAMERGE_HOME" && sbatch --parsable "${dependency[@]}" \
        --job-name=mm-prepare-merge --output="$logs/%x-%j.out" --cpus-per-task=1 "${extra[@]}" \
        --export=ALL,PREPARE_STEP=merge,ARRAY_JOB_ID="${parts_of:-$array_id}",MEGAMERGE_HOME="$MEGAMERGE_HOME" \
        "$MEGAMERGE_HOME/slurm/prepare_corpus.sh")
    merge_id=${merge_id%%;*}
    if [[ -n $RESUME && -z $array ]]; then
        mm_log "resuming array job $RESUME: every part finished; merge job $merge_id -> $OUT"
    elif [[ -n $RESUME ]]; then
        mm_log "resuming array job $RESUME: rerunning part(s) $array of $PARTS as array job $array_id, merge job $merge_id after it -> $OUT"
    else
        mm_log "submitted $PARTS parts of ${#given[@]} input(s) as array job $array_id ($array) and merge job $merge_id after it -> $OUT"
    fi
    echo "$array_id $merge_id"
}

# megamerge_env lays out ranks for training jobs; a data job is one process.
data_env() {
    GPUS_PER_NODE=1
    megamerge_env
}

run_part() {
    data_env
    local part=${SLURM_ARRAY_TASK_ID:?not an array element}
    local out
    out=$(part_dir "${PARTS_OF:-${SLURM_ARRAY_JOB_ID:?not an array element}}" "$part")
    # A resumed part's earlier attempt may have been killed mid-build (time limit, node failure) and left
    # its hidden build folder beside the part; nothing else writes this part now (RESUME checks the queue).
    rm -rf -- "$(dirname "$out")/.$(basename "$out").partial-"*
    local -a given prepare_args
    mapfile -t given < <(inputs)
    read -r -a prepare_args <<<"$PREPARE_ARGS"
    mkdir -p "$(dirname "$out")"
    mm_log "array job $SLURM_ARRAY_JOB_ID part $part/$PARTS on $(hostname) -> $out"
    "$PYTHON" "$MEGAMERGE_HOME/data_prep/prepare.py" --input "${given[@]}" --out "$out" --part "$part/$PARTS" \
        --no-progress "${prepare_args[@]}"
}

run_merge() {
    data_env
    local array_id=${ARRAY_JOB_ID:?the merge job needs ARRAY_JOB_ID (submit with bash slurm/prepare_corpus.sh)}
    local -a parts merge_args=(--out "$OUT" --input-check "$INPUT_CHECK" --no-progress)
    local part
    for ((part = 1; part <= PARTS; part++)); do parts+=("$(part_dir "$array_id" "$part")"); done
    [[ $OVERWRITE == 1 ]] && merge_args+=(--overwrite)
    local -a unfinished
    mapfile -t unfinished < <(unfinished_parts "$array_id")
    if ((${#unfinished[@]})); then  # merge_parts.py names the first and fails; say how to go on
        mm_log "part(s) ${unfinished[*]} of $PARTS did not finish (their logs: $(mm_abspath "$LOG_DIR")/mm-prepare-<job>_K.out);" \
            "once the cause is fixed, RESUME=$array_id with the same settings reruns only them and merges"
    fi
    mm_log "merging the $PARTS parts of array job $array_id into $OUT"
    "$PYTHON" "$MEGAMERGE_HOME/data_prep/merge_parts.py" --parts "${parts[@]}" "${merge_args[@]}"
    if [[ $KEEP_PARTS != 1 ]]; then  # the corpus holds its own links to every file: the parts can go
        rm -rf -- "${parts[@]}"
        rmdir -- "$PARTS_DIR/$array_id" "$PARTS_DIR" 2>/dev/null || true
        mm_log "removed the parts (KEEP_PARTS=1 keeps them)"
    fi
}

case $PREPARE_STEP in
    submit) submit ;;
    part) run_part ;;
    merge) run_merge ;;
    *) mm_die "PREPARE_STEP=$PREPARE_STEP: expected submit, part or merge" ;;
esac
