"""slurm/prepare_corpus.sh on a real single-node SLURM cluster (tests/system/slurm_cluster.py): three
small synthetic genomes prepared as a two-element job array (prepare.py --part K/2) and merged by a
job after it equal one prepare.py run of the same inputs; a part that fails makes the merge job fail,
naming it, and RESUME reruns only that part and merges.

Skipped (with the reason) only where a cluster cannot run: not Linux, not root, or neither SLURM nor
apt-get.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data_helpers import assert_same_corpus, run_prepare
from tests.system import slurm_cluster

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "slurm" / "prepare_corpus.sh"
SETTINGS = ["--seq-len", "512", "--min-len", "64", "--valid-frac", "0.2", "--samples-per-shard", "16",
            "--mix-shards", "4", "--max-n-frac", "0.5"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # includes a first-time apt install


def _submit(cluster, tmp_path: Path, said: str = "submitted 2 parts of 1 input(s) as array job",
            **settings) -> tuple[str, str, Path]:
    """bash slurm/prepare_corpus.sh with PARTS=2; returns (array id, merge id, log directory)."""
    logs = tmp_path / "logs"
    env = dict(cluster.env, PARTS="2", PREPARE_ARGS=" ".join(SETTINGS), LOG_DIR=str(logs),
               SBATCH_ARGS="--cpus-per-task=1", **settings)
    if not (REPO / ".venv" / "bin" / "python").exists():
        env["PYTHON"] = sys.executable
    submitted = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True,
                               check=False, timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert said in submitted.stdout, submitted.stdout
    array_id, merge_id = submitted.stdout.split()[-2:]
    return array_id, merge_id, logs


def _wait(cluster, job_id: str, logs: Path) -> tuple[dict, str]:
    """The job's final state and every log, for assertion messages."""
    def context() -> str:
        texts = [f"--- {p.name} ---\n{p.read_text(errors='replace')}" for p in sorted(logs.glob("*.out"))]
        return "\n".join([*texts, cluster.diagnostics()])

    try:
        return cluster.wait_for_job(job_id, timeout=900), context()
    except slurm_cluster.ClusterError as e:
        pytest.fail(f"{e}\n{context()}")


def test_array_of_parts_then_merge_equals_one_run(cluster, synthetic_genomes, tmp_path):
    out, parts_dir = tmp_path / "corpus", tmp_path / "parts"
    array_id, merge_id, logs = _submit(cluster, tmp_path, INPUT=str(synthetic_genomes), OUT=str(out),
                                       PARTS_DIR=str(parts_dir))
    merge_job, context = _wait(cluster, merge_id, logs)
    assert merge_job["JobState"] == "COMPLETED", f"{merge_job}\n{context}"
    for index in (1, 2):
        element = cluster.job(f"{array_id}_{index}")
        assert element["JobState"] == "COMPLETED" and element["ExitCode"] == "0:0", f"{element}\n{context}"
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["part"] for p in manifest["parts"]] == ["1/2", "2/2"]
    assert all(p["groups"] for p in manifest["parts"]), manifest["parts"]  # three files: both parts read some
    assert not parts_dir.exists(), "the parts are removed after a successful merge (KEEP_PARTS=0)"

    whole = tmp_path / "whole"
    run_prepare("--input", synthetic_genomes, "--out", whole, *SETTINGS)
    assert_same_corpus(whole, out)


def test_a_failed_part_fails_the_merge_naming_it_and_resume_reruns_only_it(cluster, synthetic_genomes,
                                                                           tmp_path):
    genomes = tmp_path / "genomes"
    shutil.copytree(synthetic_genomes, genomes)
    # Dealt by size, the two largest files open parts 1 and 2, and the smallest joins the lighter, part 2.
    smallest = min(genomes.glob("*.fa.gz"), key=lambda p: p.stat().st_size)
    intact = smallest.read_bytes()
    smallest.write_bytes(intact[:-100])  # truncated gzip: part 2's prepare.py fails
    out, parts_dir = tmp_path / "corpus", tmp_path / "parts"
    settings = {"INPUT": str(genomes), "OUT": str(out), "PARTS_DIR": str(parts_dir)}
    array_id, merge_id, logs = _submit(cluster, tmp_path, **settings)
    merge_job, context = _wait(cluster, merge_id, logs)
    assert merge_job["JobState"] == "FAILED", f"{merge_job}\n{context}"
    assert cluster.job(f"{array_id}_1")["JobState"] == "COMPLETED", context
    assert cluster.job(f"{array_id}_2")["JobState"] == "FAILED", context
    merge_log = next(logs.glob(f"mm-prepare-merge-{merge_id}.out")).read_text()
    assert "merge_parts.py: error:" in merge_log and "part-2-of-2" in merge_log, merge_log
    assert "part(s) 2 of 2 did not finish" in merge_log and f"RESUME={array_id}" in merge_log, merge_log
    part_log = next(logs.glob(f"mm-prepare-{array_id}_2.out")).read_text()
    assert smallest.name in part_log, part_log
    assert not out.exists()

    # The damaged file is fetched again; RESUME reruns part 2 alone, into the first submission's folder.
    smallest.write_bytes(intact)
    part_1 = parts_dir / array_id / "part-1-of-2" / "manifest.json"
    part_1_written = part_1.stat().st_mtime_ns
    stale = parts_dir / array_id / ".part-2-of-2.partial-999999"  # as a part killed mid-build leaves it
    stale.mkdir()
    rerun_id, merge_id, _ = _submit(cluster, tmp_path,
                                    said=f"resuming array job {array_id}: rerunning part(s) 2 of 2",
                                    RESUME=array_id, KEEP_PARTS="1", **settings)
    merge_job, context = _wait(cluster, merge_id, logs)
    assert merge_job["JobState"] == "COMPLETED", f"{merge_job}\n{context}"
    assert cluster.job(f"{rerun_id}_2")["JobState"] == "COMPLETED", context
    assert cluster.run(["scontrol", "show", "job", f"{rerun_id}_1"], check=False).returncode != 0, (
        "part 1 rerun")
    assert part_1.stat().st_mtime_ns == part_1_written and not stale.exists()
    whole = tmp_path / "whole"
    run_prepare("--input", genomes, "--out", whole, *SETTINGS)
    assert_same_corpus(whole, out)

    # Nothing left to rerun: RESUME submits the merge alone (here refused: the corpus exists already).
    _, merge_id, _ = _submit(cluster, tmp_path, said=f"resuming array job {array_id}: every part finished",
                             RESUME=array_id, KEEP_PARTS="1", **settings)
    merge_job, context = _wait(cluster, merge_id, logs)
    assert merge_job["JobState"] == "FAILED", f"{merge_job}\n{context}"
    assert "--overwrite" in next(logs.glob(f"mm-prepare-merge-{merge_id}.out")).read_text(), context

    # A file part 1 read, edited in place to the same size: the merge's sha256 check refuses part 1.
    part_1_files = json.loads(part_1.read_text())["files"]
    edited = Path(part_1_files[0]["source_file"])
    data = bytearray(edited.read_bytes())
    data[-1] ^= 1
    edited.write_bytes(bytes(data))
    _, merge_id, _ = _submit(cluster, tmp_path, said=f"resuming array job {array_id}: every part finished",
                             RESUME=array_id, KEEP_PARTS="1", OVERWRITE="1", **settings)
    merge_job, context = _wait(cluster, merge_id, logs)
    assert merge_job["JobState"] == "FAILED", f"{merge_job}\n{context}"
    merge_log = next(logs.glob(f"mm-prepare-merge-{merge_id}.out")).read_text()
    assert f"input file {edited} is not the file part 1/2" in merge_log, merge_log


@pytest.mark.parametrize(("resume", "error"), [
    ("4242", "RESUME=4242: no parts of that array job in"),
    ("../4242", "RESUME=../4242: expected the array job id"),
])
def test_resume_refuses_what_is_not_an_earlier_submission(tmp_path, resume, error):
    env = dict(os.environ, PREPARE_STEP="submit", PATH="/usr/bin:/bin", INPUT=str(tmp_path), RESUME=resume,
               PARTS_DIR=str(tmp_path / "parts"))
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 1 and error in proc.stderr, proc.stderr


def test_template_parses_and_documents_settings():
    text = SCRIPT.read_text()
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False, capture_output=True).returncode == 0
    header = text.split("#SBATCH", 1)[0]
    for var in ("INPUT", "INPUT_LIST", "OUT", "PARTS", "PREPARE_ARGS", "PARTS_DIR", "KEEP_PARTS", "OVERWRITE",
                "INPUT_CHECK", "MAX_PARALLEL", "RESUME", "LOG_DIR", "SBATCH_ARGS"):
        assert f"#   {var}=" in header, f"{var} undocumented"
        assert f': "${{{var}:=' in text, f"{var} has no default"
    assert 'source "$MEGAMERGE_HOME/slurm/common.sh"' in text  # shared set-up is sourced, not copied


@pytest.mark.parametrize(("settings", "error"), [
    ({"SLURM_JOB_ID": "123"}, "not sbatch"),
    ({"PARTS": "0"}, "PARTS=0: expected a positive number"),
    ({"INPUT_CHECK": "mtime"}, "INPUT_CHECK=mtime: expected sha256 or size"),
    ({"INPUT": "/nonexistent/genomes"}, "input /nonexistent/genomes does not exist"),
])
def test_bad_submissions_are_refused_before_anything_is_submitted(settings, error):
    env = dict(os.environ, PREPARE_STEP="submit", PATH="/usr/bin:/bin", **settings)  # no sbatch needed
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 1 and error in proc.stderr, proc.stderr
