"""tools/evaluate_suite.py end to end with real tools/finetune.py runs (tiny model, tiny tasks): the
summary agrees with every results.json, a rerun resumes instead of repeating, and a failing task
is reported without losing the others."""

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

REPO = Path(__file__).resolve().parents[2]
FINETUNE_ARGS = ["--method", "lora", "--epochs", "1", "--seeds", "2", "--batch-size", "16"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def evaluate_suite(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/evaluate_suite.py", "--no-progress", *args], cwd=REPO,
                          capture_output=True, text=True, check=False, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "portable"
    save_portable(MergeDNA(MergeDNAConfig.from_preset("tiny")), path,
                  extra={"training_args": {"seq_length": 64}})
    return path


def test_suite_summary_matches_results_and_resumes(model, tmp_path):
    tasks, out = tmp_path / "tasks", tmp_path / "out"
    write_task(tasks / "synth" / "motif", "motif", species=2, length=64, sizes=(24, 12, 12), seed=0)
    write_task(tasks / "synth" / "species", "species", species=3, length=64, sizes=(16, 8, 8), seed=0)
    first = evaluate_suite("--model", str(model), "--tasks", str(tasks), "--out", str(out),
                           "--compare-scratch", *FINETUNE_ARGS)
    assert first.returncode == 0, first.stdout + first.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert ([r["task"] for r in summary["rows"]] == ["synth/motif", "synth/species"]
            and summary["missing"] == [])
    for row in summary["rows"]:
        for arm in ("pretrained", "scratch"):
            result = json.loads((out / arm / row["task"] / "results.json").read_text())
            assert result["from_scratch"] == (arm == "scratch") and result["task"]
            cell = row[arm]
            assert cell["metric"] == result["metric"] and len(cell["test"]) == 2
            assert cell["test"] == [s["test"][result["metric"]] for s in result["per_seed"]]
            assert cell["test_mean"] == pytest.approx(result["test_mean"], abs=1e-12)
    means = summary["means"]["pretrained"]
    assert means["mean_over_tasks"] == pytest.approx(
        sum(r["pretrained"]["test_mean"] for r in summary["rows"]) / 2, abs=1e-12)
    assert means["mean_of_group_means"] == pytest.approx(means["mean_over_tasks"], abs=1e-12)  # one group
    md = (out / "summary.md").read_text()
    assert "| synth | synth/motif |" in md and "**mean over tasks**" in md and md in first.stdout

    # The same command again: nothing is rerun, the summary is the same.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}
    again = evaluate_suite("--model", str(model), "--tasks", str(tasks), "--out", str(out),
                           "--compare-scratch", *FINETUNE_ARGS)
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")} == stamps
    assert json.loads((out / "summary.json").read_text())["rows"] == summary["rows"]
    # Other finetune settings into the same OUT are refused, naming what changed.
    other = evaluate_suite("--model", str(model), "--tasks", str(tasks), "--out", str(out),
                           "--compare-scratch", *FINETUNE_ARGS, "--lr", "1e-3")
    assert other.returncode == 2 and "finetune_flags" in other.stderr


def test_a_failing_task_is_reported_and_the_others_kept(model, tmp_path):
    tasks, out = tmp_path / "tasks", tmp_path / "out"
    write_task(tasks / "good", "motif", species=1, length=64, sizes=(16, 8, 8), seed=0)
    bad = tasks / "one_class"
    write_task(bad, "motif", species=1, length=64, sizes=(16, 8, 8), seed=1)
    lines = (bad / "train.csv").read_text().splitlines()
    (bad / "train.csv").write_text(
        "\n".join([lines[0], *(line for line in lines[1:] if line.endswith(",1"))]) + "\n")
    proc = evaluate_suite("--model", str(model), "--tasks", str(tasks), "--out", str(out), *FINETUNE_ARGS)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "failed: pretrained one_class: finetune.py exit" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["missing"] == ["pretrained one_class"]
    assert summary["rows"][0]["task"] == "good" and summary["rows"][0]["pretrained"]["test"]
    assert (out / "pretrained" / "one_class" / "finetune.log").read_text().strip()
