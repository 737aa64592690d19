"""slurm/finetune_suite.sh on a real single-node SLURM cluster (tests/system/slurm_cluster.py): a
tiny portable model, two tiny synthetic tasks, one array element per task and a summary job after
them; the summary equals a direct tools/evaluate_suite.py run of the same suite.

Skipped (with the reason) only where a cluster cannot run: not Linux, not root, or neither SLURM nor
apt-get.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.synthetic_task import write_task
from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.portable import save_portable
from tests.system import slurm_cluster

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "slurm" / "finetune_suite.sh"
# Small enough for 2 shared cores: 2 seeds x 1 epoch of 48 sequences per arm and task.
FINETUNE_ARGS = ["--method", "lora", "--epochs", "1", "--seeds", "2", "--batch-size", "16"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # includes a first-time apt install


@pytest.fixture(scope="module")
def suite_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune-suite")
    model = root / "portable"
    save_portable(MergeDNA(MergeDNAConfig.from_preset("tiny")), model,
                  extra={"training_args": {"seq_length": 64}})
    tasks = root / "tasks"
    write_task(tasks / "synth" / "motif", "motif", species=2, length=64, sizes=(24, 12, 12), seed=0)
    write_task(tasks / "synth" / "species", "species", species=2, length=64, sizes=(24, 12, 12), seed=0)
    return model, tasks


def test_array_per_task_then_summary_equals_direct_run(cluster, suite_inputs, tmp_path):
    model, tasks = suite_inputs
    out, logs = tmp_path / "slurm-suite", tmp_path / "logs"
    env = dict(cluster.env, MODEL=str(model), TASKS=str(tasks), OUT=str(out), LOG_DIR=str(logs),
               COMPARE_SCRATCH="1", FINETUNE_ARGS=" ".join(FINETUNE_ARGS),
               SBATCH_ARGS="--gpus-per-node=0 --cpus-per-task=1")
    if not (REPO / ".venv" / "bin" / "python").exists():
        env["PYTHON"] = sys.executable
    submitted = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True,
                               check=False, timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    array_id, summary_id = submitted.stdout.split()[-2:]
    assert "submitted 2 tasks as array job" in submitted.stdout

    def context() -> str:
        texts = [f"--- {p.name} ---\n{p.read_text(errors='replace')}" for p in sorted(logs.glob("*.out"))]
        runs = [f"--- {p} ---\n{p.read_text(errors='replace')[-3000:]}"
                for p in sorted(out.rglob("finetune.log"))]
        return "\n".join([*texts, *runs, cluster.diagnostics()])

    try:
        summary_job = cluster.wait_for_job(summary_id, timeout=1200)
    except slurm_cluster.ClusterError as e:
        pytest.fail(f"{e}\n{context()}")
    assert summary_job["JobState"] == "COMPLETED", f"{summary_job}\n{context()}"
    for index in (0, 1):
        element = cluster.job(f"{array_id}_{index}")
        assert element["JobState"] == "COMPLETED" and element["ExitCode"] == "0:0", f"{element}\n{context()}"
    assert (out / "summary.md").is_file(), context()
    slurm_summary = json.loads((out / "summary.json").read_text())
    assert [r["task"] for r in slurm_summary["rows"]] == ["synth/motif", "synth/species"]
    assert slurm_summary["missing"] == []

    # The same suite, run directly with the array elements' one thread: the same numbers.
    direct_out = tmp_path / "direct-suite"
    direct = subprocess.run([sys.executable, "tools/evaluate_suite.py", "--model", str(model),
                             "--tasks", str(tasks), "--out", str(direct_out), "--compare-scratch",
                             "--no-progress", *FINETUNE_ARGS],
                            cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                            text=True, check=False, timeout=1200)
    assert direct.returncode == 0, direct.stdout + direct.stderr
    direct_summary = json.loads((direct_out / "summary.json").read_text())
    for slurm_row, direct_row in zip(slurm_summary["rows"], direct_summary["rows"], strict=True):
        for arm in ("pretrained", "scratch"):
            assert slurm_row[arm]["test"] == pytest.approx(direct_row[arm]["test"], abs=1e-9), (
                arm, slurm_row)
            assert slurm_row[arm]["dev"] == pytest.approx(direct_row[arm]["dev"], abs=1e-9), (arm, slurm_row)
    for arm in ("pretrained", "scratch"):
        assert slurm_summary["means"][arm]["mean_over_tasks"] == pytest.approx(
            direct_summary["means"][arm]["mean_over_tasks"], abs=1e-9)

    # Resubmitting a finished suite reruns nothing: every element finds its results.json.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}
    again = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True,
                           check=False, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    second_summary = again.stdout.split()[-1]
    assert cluster.wait_for_job(second_summary, timeout=600)["JobState"] == "COMPLETED", context()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")} == before


def test_template_parses_and_documents_settings():
    text = SCRIPT.read_text()
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False, capture_output=True).returncode == 0
    header = text.split("#SBATCH", 1)[0]
    for var in ("MODEL", "TASKS", "OUT", "COMPARE_SCRATCH", "FINETUNE_ARGS", "GPUS_PER_NODE", "SBATCH_ARGS",
                "LOG_DIR"):
        assert f"#   {var}=" in header, f"{var} undocumented"
        assert f': "${{{var}:=' in text, f"{var} has no default"
    assert 'source "$MEGAMERGE_HOME/slurm/common.sh"' in text  # shared set-up is sourced, not copied


def test_submitting_from_inside_a_job_is_refused():
    env = dict(os.environ, SLURM_JOB_ID="123", SUITE_STEP="submit")
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 1 and "not sbatch" in proc.stderr
