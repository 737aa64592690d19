"""`scancel --signal=USR1` and `--signal=TERM` on a real SLURM job whose 2 ranks run 2 DataLoader
workers each (issue 19, row 2; the templates' default NUM_WORKERS=2). SLURM signals every process
of the job step, workers included. Before: "DataLoader worker ... is killed by signal", exit 1, no
checkpoint, no exit_status.json. Now the workers leave the signal to their rank, which saves a
checkpoint at the next iteration and exits 0; REQUEUE=0 ends the job there (the requeue itself is
tests/system/test_slurm.py's)."""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import REPO
from tests.system import slurm_cluster
from tests.system.test_slurm import (  # noqa: F401  (corpus is a fixture used by name)
    corpus,
    job_log,
    sbatch_command,
    tiny_overrides,
    train_records,
)

pytestmark = pytest.mark.timeout(1200)  # includes a first-time apt install


@pytest.mark.parametrize("signal_name", ["USR1", "TERM"])
def test_scancel_signal_reaches_workers_and_ranks_save_and_exit_zero(cluster, corpus, tmp_path, signal_name):  # noqa: F811
    save, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    overrides = {**tiny_overrides(save, corpus, 1000), "NUM_WORKERS": "2", "REQUEUE": "0"}
    job_id = cluster.run(sbatch_command(logs, overrides, wait=False), cwd=REPO).stdout.strip().split(";")[0]

    def context() -> str:
        return f"--- job {job_id} log ---\n{job_log(logs, job_id)}\n{cluster.diagnostics()}"

    deadline = time.monotonic() + 240
    while not any(r["iteration"] >= 2 for r in train_records(save)):
        info = cluster.job(job_id)
        assert info["JobState"] in ("PENDING", "CONFIGURING", "RUNNING"), f"{info}\n{context()}"
        assert time.monotonic() < deadline, f"no training progress within 240s\n{context()}"
        time.sleep(0.5)
    cluster.run(["scancel", f"--signal={signal_name}", job_id])
    try:
        info = cluster.wait_for_job(job_id, timeout=300)
    except slurm_cluster.ClusterError as e:
        pytest.fail(f"{e}\n{context()}")

    log = job_log(logs, job_id)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{context()}"
    assert "killed by signal" not in log and "Traceback" not in log, context()
    status = json.loads((save / "exit_status.json").read_text())
    assert status["reason"].startswith("signal") and not status["finished"], status
    tag = f"global_step{status['iteration']}"
    assert (save / "latest").read_text().strip() == tag, context()
    assert (save / tag / "megamerge_complete").is_file(), context()
    assert "REQUEUE=0: not requeueing" in log, context()
