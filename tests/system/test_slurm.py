"""slurm/pretrain_380m.sh and pretrain_380m_long.sh on a real single-node SLURM cluster (slurmctld +
slurmd + munged on this machine, see tests/system/slurm_cluster.py): not a fake srun.

* the template, unchanged, runs a tiny 2-rank CPU job through sbatch / srun and completes;
* the long-context template, unchanged, runs the same job with SP = 2 (both ranks on one sample,
  activation checkpointing, micro-batch 1, its defaults) and completes with a checkpoint;
* `scancel --signal=USR1` mid-run: the job checkpoints, requeues itself, the requeued job resumes
  from that checkpoint and completes, and the consumed-sample count goes on without repeat or gap.

Skipped (with the reason) only where a cluster cannot run: not Linux, not root, or neither SLURM nor
apt-get. CI runs as root with apt, so there it installs slurm-wlm/munge and runs.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.system import slurm_cluster

TEMPLATE = REPO / "slurm" / "pretrain_380m.sh"
LONG_TEMPLATE = REPO / "slurm" / "pretrain_380m_long.sh"
GLOBAL_BATCH = 8
REQUEUE_RELEASE_DELAY_S = 3.0  # > slurmd's 1-second credential-revocation resolution
pytestmark = pytest.mark.timeout(1200)  # includes a first-time apt install


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny prepared corpus (3 synthetic species), to exercise DATA= rather than mock data."""
    d = tmp_path_factory.mktemp("slurm-data")
    py = sys.executable
    subprocess.run([py, "data_prep/synthetic.py", "--out", str(d / "genomes"), "--species", "3", "--length",
                    "200000"], cwd=REPO, check=True, capture_output=True, timeout=120)
    subprocess.run([py, "data_prep/prepare.py", "--input", str(d / "genomes"), "--out", str(d / "corpus"),
                    "--seq-len", "256", "--valid-frac", "0.1"], cwd=REPO, check=True, capture_output=True,
                   timeout=300)
    return d / "corpus"


def tiny_overrides(save: Path, data: Path, train_iters: int) -> dict[str, str]:
    """The template's documented overrides for a 2-process CPU job (one process per core)."""
    env = {
        "MODEL": "tiny", "DS_CONFIG": "ds_configs/cpu.json", "GPUS_PER_NODE": "2", "DATA": str(data),
        "SAVE": str(save), "TRAIN_ITERS": str(train_iters), "SEQ_LENGTH": "256",
        "GLOBAL_BATCH": str(GLOBAL_BATCH), "MICRO_BATCH": "2", "LR": "1e-3", "WARMUP_ITERS": "2",
        "LOG_INTERVAL": "1", "SAVE_INTERVAL": "1000", "EVAL_INTERVAL": "1000", "EVAL_ITERS": "2",
        "NUM_WORKERS": "1", "RUN_NAME": save.name,
    }
    if not (REPO / ".venv" / "bin" / "python").exists():
        env["PYTHON"] = sys.executable  # the template's default is the checkout's .venv
    try:
        socket.gethostbyname(socket.gethostname())
    except OSError:
        env["MASTER_ADDR"] = "127.0.0.1"  # the node name does not resolve on this machine
    return env


def sbatch_command(log_dir: Path, overrides: dict[str, str], wait: bool,
                   template: Path = TEMPLATE) -> list[str]:
    exports = ",".join(["ALL", *(f"{k}={v}" for k, v in overrides.items())])
    # --gpus-per-node=0 overrides the template's 8 on this GPU-less node (--gres=none is rejected);
    # --output keeps the per-job log out of the checkout's slurm/logs/.
    cmd = ["sbatch", "--parsable", "--gpus-per-node=0", f"--output={log_dir}/%x-%j.out",
           f"--export={exports}"]
    return [*cmd, "--wait", str(template)] if wait else [*cmd, str(template)]


def job_log(log_dir: Path, job_id: str) -> str:
    logs = list(log_dir.glob(f"*-{job_id}.out"))
    return logs[0].read_text(errors="replace") if logs else "(no job log)"


def metrics_lines(save: Path) -> list[dict]:
    path = save / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_records(save: Path) -> list[dict]:
    return [r for r in metrics_lines(save) if r.get("split", "train") == "train"]


def run_finished_job(cluster, logs: Path, save: Path, overrides: dict[str, str], iters: int,
                     template: Path) -> tuple[str, str, str, list[dict]]:
    """sbatch --wait `template` as a 2-rank job; checks that it completed through srun with a
    checkpoint published as `latest`, a finished exit status and one metrics line per iteration.
    Returns (job id, job log, failure context, the metrics records)."""
    proc = cluster.run(sbatch_command(logs, overrides, wait=True, template=template), check=False,
                       timeout=420, cwd=REPO)
    job_id = proc.stdout.strip().split(";")[0]
    log = job_log(logs, job_id)
    context = f"sbatch exit {proc.returncode} {proc.stderr}\n--- job log ---\n{log}\n{cluster.diagnostics()}"
    assert job_id.isdigit(), context
    info = cluster.job(job_id)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", context
    assert proc.returncode == 0, context
    assert "ranks: 1 x 2 = 2" in log, context
    assert (save / "latest").read_text().strip() == f"global_step{iters}", context
    assert (save / f"global_step{iters}" / "megamerge_complete").is_file(), context
    status = json.loads((save / "exit_status.json").read_text())
    assert status["finished"] and status["iteration"] == iters, status
    records = train_records(save)
    assert [r["iteration"] for r in records] == list(range(1, iters + 1)), context
    return job_id, log, context, records


def test_template_runs_tiny_cpu_job(cluster, corpus, tmp_path):
    save, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    iters = 12
    t0 = time.monotonic()
    job_id, log, context, records = run_finished_job(cluster, logs, save, tiny_overrides(save, corpus, iters),
                                                     iters, TEMPLATE)
    assert "global batch 8 = micro 2 x accumulation 2 x DP 2" in log, context
    assert "starting run" in log and "from scratch" in log, context
    losses = [r["loss"] for r in records]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.1, f"loss did not fall: {losses}"
    print(f"tiny CPU job {job_id}: {time.monotonic() - t0:.0f}s, loss {first:.3f} -> {last:.3f}")


def test_long_context_template_runs_tiny_sp2_job(cluster, corpus, tmp_path):
    """pretrain_380m_long.sh with the tiny model at 256 bases: SP = 2 puts both ranks on one sample
    (DP 1), so its micro-batch 1 and a global batch of 2 mean accumulation 2."""
    save, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    iters = 4
    overrides = {**tiny_overrides(save, corpus, iters), "SP": "2", "GLOBAL_BATCH": "2"}
    del overrides["MICRO_BATCH"]  # the template's: 1
    _, log, context, records = run_finished_job(cluster, logs, save, overrides, iters, LONG_TEMPLATE)
    assert "--sequence-parallel-size 2" in log and "--checkpoint-activations" in log, context
    assert "SP 2 x DP 1" in log, context
    assert "global batch 2 = micro 1 x accumulation 2 x DP 1" in log, context
    assert [r["consumed_samples"] for r in records] == [2 * i for i in range(1, iters + 1)], context


def test_usr1_checkpoints_requeues_and_resumes(cluster, corpus, tmp_path):
    save, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    iters = 30
    t0 = time.monotonic()
    proc = cluster.run(sbatch_command(logs, tiny_overrides(save, corpus, iters), wait=False), cwd=REPO)
    job_id = proc.stdout.strip().split(";")[0]

    def context() -> str:
        return f"--- job {job_id} log ---\n{job_log(logs, job_id)}\n{cluster.diagnostics()}"

    # Signal once training is under way (the ranks exist only then: SLURM delivers USR1 to steps).
    deadline = time.monotonic() + 240
    while not any(r["iteration"] >= 4 for r in train_records(save)):
        info = cluster.job(job_id)
        assert info["JobState"] in ("PENDING", "CONFIGURING", "RUNNING"), f"{info}\n{context()}"
        assert time.monotonic() < deadline, f"no training progress within 240s\n{context()}"
        time.sleep(0.5)
    seen_before_signal = max(r["iteration"] for r in train_records(save))
    cluster.run(["scancel", "--signal=USR1", job_id])

    requeued_at, released = [], []

    def release_requeue_hold(info: dict) -> None:
        # slurmctld holds a requeued job for a fixed ~2 minutes (EligibleTime = requeue + 121 s);
        # an operator's `StartTime=now` skips the wait without changing what the job does. Not at
        # once, though: slurmd revokes the old incarnation's credential with 1-second resolution and
        # refuses ("Job N already killed, do not launch batch job", then FAILED) a relaunch whose
        # credential dates from the same second. Slurm's own hold never comes near that.
        if info.get("JobState") != "PENDING" or info.get("Restarts", "0") == "0" or released:
            return
        if not requeued_at:
            requeued_at.append(time.monotonic())
        elif time.monotonic() - requeued_at[0] >= REQUEUE_RELEASE_DELAY_S:
            cluster.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
            released.append(time.monotonic())

    try:
        info = cluster.wait_for_job(job_id, timeout=420, on_poll=release_requeue_hold)
    except slurm_cluster.ClusterError as e:
        pytest.fail(f"{e}\n{context()}")
    log = job_log(logs, job_id)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{context()}"
    assert info["Restarts"] == "1", f"expected exactly one requeue: {info}\n{context()}"

    # First incarnation: stopped on the signal at iteration k, saved global_stepk, requeued itself.
    stopped = re.search(rf"train\.py stopped at iteration (\d+)/{iters} \(\d+ samples\): signal", log)
    assert stopped, context()
    k = int(stopped.group(1))
    assert seen_before_signal <= k < iters, (seen_before_signal, k, context())
    assert f"requeueing job {job_id}" in log, context()
    assert (save / f"global_step{k}" / "megamerge_complete").is_file(), context()
    # Second incarnation: same job id and per-job log (--open-mode=append), resumed from global_stepk.
    assert "restart 0 on" in log and "restart 1 on" in log, context()
    assert f"resuming {save} from global_step{k}" in log, context()
    assert re.search(rf"resumed from {re.escape(str(save))}/global_step{k} at iteration {k} "
                     rf"\({k * GLOBAL_BATCH} samples consumed\)", log), context()

    # The sample stream goes straight on: every iteration logged exactly once, +GLOBAL_BATCH each.
    records = train_records(save)
    assert [r["iteration"] for r in records] == list(range(1, iters + 1)), context()
    assert ([r["consumed_samples"] for r in records]
            == [i * GLOBAL_BATCH for i in range(1, iters + 1)]), context()
    status = json.loads((save / "exit_status.json").read_text())
    assert status["finished"] and status["consumed_samples"] == iters * GLOBAL_BATCH, status
    assert (save / "latest").read_text().strip() == f"global_step{iters}"
    print(f"preempted job {job_id}: signal at iteration {k}, resumed and finished in "
          f"{time.monotonic() - t0:.0f}s")
