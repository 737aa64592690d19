"""Soak: a tiny pre-training job under a real local SLURM cluster, preempted with `scancel
--signal=USR1` at random moments and requeued again and again, against the same job run without
interruption (issue 19). 2 ranks x 2 DataLoader workers through slurm/pretrain_380m.sh.

    sudo .venv/bin/python -m benchmarks.soak_preemption --preemptions 5 --train-iters 40

Prints one JSON object: preemptions survived, iterations (hence samples) repeated and skipped in
metrics.jsonl, consumed-sample sequences equal, the largest per-step loss difference and the final
one. Needs root (the cluster's daemons, as tests/system/test_slurm.py); CPU heavy for minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from benchmarks.benchmarks_md import machine_line, update_section
from tests.helpers import REPO
from tests.system import slurm_cluster
from tests.system.test_slurm import GLOBAL_BATCH, job_log, metrics_lines, sbatch_command, tiny_overrides

SECTION = "Preemption soak (issue 19)"
REQUEUE_RELEASE_DELAY_S = 3.0  # see tests/system/test_slurm.py: slurmd refuses a same-second relaunch


def prepared_corpus(root: Path) -> Path:
    py = sys.executable
    subprocess.run([py, "data_prep/synthetic.py", "--out", str(root / "genomes"), "--species", "3",
                    "--length", "200000"], cwd=REPO, check=True, capture_output=True, timeout=300)
    subprocess.run([py, "data_prep/prepare.py", "--input", str(root / "genomes"),
                    "--out", str(root / "corpus"), "--seq-len", "256", "--valid-frac", "0.1"],
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    return root / "corpus"


def train_lines(save: Path) -> list[dict]:
    return [r for r in metrics_lines(save) if r.get("split", "train") == "train"]


def uninterrupted(cluster, corpus: Path, work: Path, iters: int) -> list[dict]:
    save, logs = work / "reference", work / "reference-logs"
    logs.mkdir()
    overrides = {**tiny_overrides(save, corpus, iters), "NUM_WORKERS": "2"}
    proc = cluster.run(sbatch_command(logs, overrides, wait=True), check=False, timeout=1200, cwd=REPO)
    job_id = proc.stdout.strip().split(";")[0]
    if proc.returncode:
        raise SystemExit(f"reference job failed:\n{job_log(logs, job_id)}")
    return train_lines(save)


def preempted(cluster, corpus: Path, work: Path, iters: int, preemptions: int, rng: random.Random):
    """Submit, then signal each incarnation at a random moment once it has trained at least one
    iteration of its own, until `preemptions` signals were sent; returns (records, signals sent, job
    info, log)."""
    save, logs = work / "preempted", work / "preempted-logs"
    logs.mkdir()
    overrides = {**tiny_overrides(save, corpus, iters), "NUM_WORKERS": "2"}
    job_id = cluster.run(sbatch_command(logs, overrides, wait=False), cwd=REPO).stdout.strip().split(";")[0]
    sent, signalled_at_restart, requeued_seen, baseline = 0, None, {}, {}
    progress = tqdm(total=preemptions, desc="preemptions", unit="signal")
    deadline = time.monotonic() + 3600
    while True:
        info = cluster.job(job_id)
        state, restarts = info.get("JobState"), int(info.get("Restarts", "0"))
        if state in slurm_cluster.TERMINAL_STATES:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} still {state} after an hour:\n{job_log(logs, job_id)}")
        # release the ~2-minute requeue hold (an operator's StartTime=now)
        if state == "PENDING" and restarts > 0:
            first_seen = requeued_seen.setdefault(restarts, time.monotonic())
            if time.monotonic() - first_seen >= REQUEUE_RELEASE_DELAY_S:
                cluster.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=False)
        elif state == "RUNNING" and sent < preemptions and signalled_at_restart != restarts:
            done = max((r["iteration"] for r in train_lines(save)), default=0)
            # the previous incarnation has exited once this one runs: what is logged now is its own
            if done > baseline.setdefault(restarts, done) and done < iters - 2:
                time.sleep(rng.uniform(0, 4))  # a random moment inside the step
                cluster.run(["scancel", "--signal=USR1", job_id])
                sent, signalled_at_restart = sent + 1, restarts
                progress.update()
        time.sleep(0.5)
    progress.close()
    return train_lines(save), sent, cluster.job(job_id), job_log(logs, job_id)


def compare(reference: list[dict], run: list[dict], iters: int) -> dict:
    counts: dict[int, int] = {}
    for r in run:
        counts[r["iteration"]] = counts.get(r["iteration"], 0) + 1
    ref = {r["iteration"]: r for r in reference}
    got = {r["iteration"]: r for r in run}
    steps = sorted(set(ref) & set(got))
    return {
        "iterations_repeated": sum(c - 1 for c in counts.values()),
        "iterations_skipped": sum(1 for i in range(1, iters + 1) if i not in counts),
        "samples_repeated": sum(c - 1 for c in counts.values()) * GLOBAL_BATCH,
        "samples_skipped": sum(1 for i in range(1, iters + 1) if i not in counts) * GLOBAL_BATCH,
        "consumed_samples_equal": [ref[i]["consumed_samples"] for i in steps]
        == [got[i]["consumed_samples"] for i in steps] and len(steps) == iters,
        "max_step_loss_difference": max(abs(ref[i]["loss"] - got[i]["loss"]) for i in steps),
        "final_loss_difference": abs(ref[iters]["loss"] - got[iters]["loss"]) if iters in steps else None,
    }


def section_body(results: list[tuple[int, dict]]) -> str:
    rows = "\n".join(
        f"| {seed} | {r['preemptions_sent']} ({r['restarts']}) | {r['job_state']} {r['exit_code']} | "
        f"{', '.join(map(str, r['stopped_at_iterations'][:-1]))} | {r['samples_repeated']} | "
        f"{r['samples_skipped']} | "
        f"{'equal' if r['consumed_samples_equal'] else 'DIFFERENT'} | {r['max_step_loss_difference']:g} | "
        f"{r['final_loss_difference']:g} | {r['wall_seconds']} s |" for seed, r in results)
    return f"""Command: `sudo .venv/bin/python -m benchmarks.soak_preemption \
--preemptions 5 --train-iters 40 --seed S`. \
Machine: {machine_line()}, 2 CPU cores shared with other work. A real one-node SLURM cluster \
(tests/system/slurm_cluster.py) runs `slurm/pretrain_380m.sh` unchanged: tiny model, `ds_configs/cpu.json`, \
2 ranks x 2 DataLoader workers each, a prepared synthetic corpus (seq_len 256), global batch {GLOBAL_BATCH} \
(micro 2 x accumulation 2 x DP 2). One job runs uninterrupted; the same job is sent `scancel --signal=USR1` \
once in each incarnation, a random 0-4 s after it has logged an iteration of its own; the template \
checkpoints, requeues itself, and the next incarnation resumes (the ~2-minute requeue hold is released \
with `scontrol update StartTime=now` after 3 s).

| seed | preemptions survived (requeues) | job end | stopped at iterations | samples repeated \
| samples skipped | consumed-sample sequence vs uninterrupted | largest per-step loss difference \
| final loss difference | wall |
|---|---:|---|---|---:|---:|---|---:|---:|---:|
{rows}

Losses are bit-identical step for step: a resume restores every (rank, worker) slot's data position, the \
RNG states and the optimizer, and every random draw of the model is keyed by the global sample index.
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preemptions", type=int, default=5, help="USR1 signals to send, one per incarnation")
    p.add_argument("--train-iters", type=int, default=40)
    p.add_argument("--seed", type=int, default=0, help="seed of the random signal moments")
    p.add_argument("--no-write", action="store_true", help=f"do not rewrite BENCHMARKS.md's '{SECTION}'")
    args = p.parse_args(argv)
    reason = slurm_cluster.unavailable_reason()
    if reason:
        p.error(reason)
    slurm_cluster.ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="mm-soak-"))
    cluster = slurm_cluster.SlurmCluster(root / "cluster")
    t0 = time.monotonic()
    try:
        cluster.start()
        corpus = prepared_corpus(root)
        reference = uninterrupted(cluster, corpus, root, args.train_iters)
        run, sent, info, log = preempted(cluster, corpus, root, args.train_iters, args.preemptions,
                                         random.Random(args.seed))
        result = {
            "preemptions_sent": sent, "restarts": int(info.get("Restarts", "0")),
            "job_state": info.get("JobState"),
            "exit_code": info.get("ExitCode"), "train_iters": args.train_iters, "global_batch": GLOBAL_BATCH,
            "ranks_x_workers": "2 x 2",
            "stopped_at_iterations": [
                int(k) for k in re.findall(r"train\.py stopped at iteration (\d+)/", log)],
            **compare(reference, run, args.train_iters),
            "wall_seconds": round(time.monotonic() - t0),
        }
        print(json.dumps(result, indent=2))
        if not args.no_write:
            update_section(SECTION, section_body([(args.seed, result)]))
        ok = (result["job_state"] == "COMPLETED" and result["restarts"] == sent == args.preemptions
              and result["iterations_repeated"] == result["iterations_skipped"] == 0)
        if not ok:
            print(log[-6000:], file=sys.stderr)
        return 0 if ok else 1
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
