"""The suite around tools/finetune.py: task discovery, the aggregation in summary.json / summary.md,
resume and settings checks, and the labelled synthetic tasks. The end-to-end suite with real
fine-tuning runs is in tests/unit/test_finetune_suite_run.py."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from data_prep.synthetic_task import MOTIF_LENGTH, write_task
from megamerge.finetune.suite import (
    SuiteError,
    Task,
    check_passthrough,
    find_tasks,
    render_markdown,
    result_path,
    select_tasks,
    summarize,
    write_config,
)

REPO = Path(__file__).resolve().parents[2]


def make_task_dir(path: Path, splits=("train", "dev", "test"), suffix=".csv") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for split in splits:
        (path / f"{split}{suffix}").write_text("sequence,label\nACGT,0\nTTGA,1\n")
    return path


def write_result(out: Path, arm: str, task: Task, test: list[float], dev: list[float], metric: str = "mcc"):
    path = result_path(out, arm, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    per_seed = [{"seed": k, "best_epoch": 1, "dev": {metric: d, "accuracy": 0.5}, "test": {metric: t}}
                for k, (t, d) in enumerate(zip(test, dev, strict=True))]
    path.write_text(json.dumps({"task": task.name, "method": "lora", "from_scratch": arm == "scratch",
                                "metric": metric, "per_seed": per_seed, "wall_time_s": 10.0}))


def test_find_tasks_names_groups_and_natural_order(tmp_path):
    for name in ("tf/10", "tf/9", "tf/0", "prom/core"):
        make_task_dir(tmp_path / name)
    make_task_dir(tmp_path / "emp" / "h3", suffix=".tsv")
    (tmp_path / "notes").mkdir()  # a directory without splits is not a task
    tasks = find_tasks(tmp_path)
    assert [(t.name, t.group) for t in tasks] == [("emp/h3", "emp"), ("prom/core", "prom"), ("tf/0", "tf"),
                                                  ("tf/9", "tf"), ("tf/10", "tf")]
    # The root itself can be the one task.
    assert [(t.name, t.group) for t in find_tasks(tmp_path / "tf" / "9")] == [("9", ".")]


def test_only_selects_tasks_by_pattern(tmp_path):
    for name in ("tf/0", "tf/1", "prom/core"):
        make_task_dir(tmp_path / name)
    tasks = find_tasks(tmp_path)
    assert [t.name for t in select_tasks(tasks, "tf/*")] == ["tf/0", "tf/1"]
    assert [t.name for t in select_tasks(tasks, "tf/1, prom/core")] == ["prom/core", "tf/1"]
    assert select_tasks(tasks, None) == tasks
    with pytest.raises(SuiteError, match=r"tf/7 matches no task \(tasks: prom/core, tf/0, tf/1\)"):
        select_tasks(tasks, "tf/0,tf/7")


def test_find_tasks_errors_name_the_directory(tmp_path):
    make_task_dir(tmp_path / "ok")
    make_task_dir(tmp_path / "broken", splits=("train", "test"))
    with pytest.raises(SuiteError, match=r"broken \(has train, test; missing dev\)"):
        find_tasks(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SuiteError, match="no directory under it"):
        find_tasks(tmp_path / "empty")
    with pytest.raises(SuiteError, match="not a directory"):
        find_tasks(tmp_path / "absent")


def test_passthrough_refuses_flags_the_suite_sets():
    check_passthrough(["--method", "lora", "--lr", "1e-4", "--seeds", "3"])
    for flag in ("--from-scratch", "--task", "--out=x", "--model"):
        with pytest.raises(SuiteError, match="set by the suite"):
            check_passthrough(["--lr", "1e-4", flag])


def test_summary_means_over_tasks_and_of_group_means(tmp_path):
    tasks = [Task("tf/0", "tf", tmp_path), Task("tf/1", "tf", tmp_path), Task("prom/a", "prom", tmp_path)]
    out = tmp_path / "out"
    # Per-seed test MCC; task means: pretrained 0.5, 0.3, 0.8; scratch 0.4, 0.2, 0.85.
    write_result(out, "pretrained", tasks[0], [0.4, 0.5, 0.6], [0.1, 0.2, 0.3])
    write_result(out, "pretrained", tasks[1], [0.3, 0.3, 0.3], [0.3, 0.3, 0.3])
    write_result(out, "pretrained", tasks[2], [0.7, 0.8, 0.9], [0.5, 0.5, 0.5])
    write_result(out, "scratch", tasks[0], [0.4, 0.4, 0.4], [0.1, 0.1, 0.1])
    write_result(out, "scratch", tasks[1], [0.2, 0.2, 0.2], [0.2, 0.2, 0.2])
    write_result(out, "scratch", tasks[2], [0.85, 0.85, 0.85], [0.2, 0.2, 0.2])
    summary = summarize(out, tasks, ["pretrained", "scratch"])
    pre, scr = summary["means"]["pretrained"], summary["means"]["scratch"]
    assert pre["mean_over_tasks"] == pytest.approx((0.5 + 0.3 + 0.8) / 3)
    assert pre["mean_of_group_means"] == pytest.approx(((0.5 + 0.3) / 2 + 0.8) / 2)  # tf 0.4, prom 0.8
    assert pre["group_means"] == pytest.approx({"tf": 0.4, "prom": 0.8})
    assert scr["mean_over_tasks"] == pytest.approx(1.45 / 3)
    assert scr["mean_of_group_means"] == pytest.approx(0.575)  # tf 0.3, prom 0.85
    # Seed k's suite mean: 0.4667, 0.5333, 0.6 -> std over seeds.
    assert pre["per_seed_mean_over_tasks"] == pytest.approx([1.4 / 3, 1.6 / 3, 1.8 / 3])
    assert pre["std_over_seeds"] == pytest.approx(0.2 / 3)
    row = summary["rows"][0]
    assert (row["pretrained"]["test_mean"] == pytest.approx(0.5)
            and row["pretrained"]["test_std"] == pytest.approx(0.1))
    assert row["pretrained"]["dev_mean"] == pytest.approx(0.2)
    assert summary["pretrained_wins"] == 2 and summary["compared_tasks"] == 3  # tf/0, tf/1; not prom/a
    assert summary["missing"] == [] and summary["finetune_wall_s_total"] == pytest.approx(60.0)

    md = render_markdown(summary)
    assert "| tf | tf/0 | 0.500 ± 0.100 | 0.400 ± 0.000 | +0.100 |" in md
    assert "|  | **mean over tasks** | 0.533 | 0.483 | +0.050 |" in md
    assert "|  | **mean of group means** | 0.600 | 0.575 | +0.025 |" in md
    assert "Headline: mean over tasks" in md and "pre-trained: **0.533** ± 0.067 over seeds" in md
    assert "Pre-training wins on 2 of 3 tasks." in md
    assert "Headline: mean over groups" in render_markdown(summarize(out, tasks, ["pretrained", "scratch"],
                                                                      headline="groups"))


def test_summary_lists_missing_runs_and_rejects_bad_results(tmp_path):
    tasks = [Task("a", ".", tmp_path), Task("b", ".", tmp_path)]
    out = tmp_path / "out"
    write_result(out, "pretrained", tasks[0], [0.5], [0.5])
    summary = summarize(out, tasks, ["pretrained"])
    assert summary["missing"] == ["pretrained b"] and summary["means"]["pretrained"] is None
    assert "| . | b | missing |" in render_markdown(summary) and "incomplete" in render_markdown(summary)
    result_path(out, "pretrained", tasks[1]).parent.mkdir(parents=True)
    result_path(out, "pretrained", tasks[1]).write_text(
        json.dumps({"metric": "mcc", "per_seed": [{"test": {}}]}))
    with pytest.raises(SuiteError,
                       match=r"b/results.json: per_seed entries need dev and test values of 'mcc'"):
        summarize(out, tasks, ["pretrained"])


def test_resume_refuses_other_settings(tmp_path):
    config = {"model": "/m", "arms": ["pretrained"], "finetune_flags": ["--lr", "1e-4"]}
    write_config(tmp_path, config, overwrite=False)
    write_config(tmp_path, config, overwrite=False)  # same settings: resuming is fine
    other = dict(config, finetune_flags=["--lr", "5e-5"])
    with pytest.raises(SuiteError, match=r"finetune_flags: \['--lr', '1e-4'\] -> \['--lr', '5e-5'\]"):
        write_config(tmp_path, other, overwrite=False)
    write_config(tmp_path, other, overwrite=True)
    assert json.loads((tmp_path / "suite_config.json").read_text()) == other


def test_cli_lists_tasks_and_rejects_bad_flags(tmp_path):
    make_task_dir(tmp_path / "g" / "t1")
    make_task_dir(tmp_path / "g" / "t2")

    def cli(*args):
        return subprocess.run([sys.executable, "tools/evaluate_suite.py", *args], cwd=REPO,
                              capture_output=True, text=True, check=False, timeout=120)

    listed = cli("--tasks", str(tmp_path), "--list-tasks")
    assert listed.returncode == 0 and listed.stdout.split() == ["g/t1", "g/t2"], listed.stderr
    bad = cli("--tasks", str(tmp_path), "--model", str(tmp_path), "--out", str(tmp_path / "o"),
              "--from-scratch")
    assert bad.returncode == 2 and "--from-scratch: set by the suite" in bad.stderr
    no_model = cli("--tasks", str(tmp_path), "--model", str(tmp_path), "--out", str(tmp_path / "o"))
    assert no_model.returncode == 2 and "no config.json there" in no_model.stderr
    index = cli("--tasks", str(tmp_path), "--model", str(tmp_path), "--out", str(tmp_path / "o"),
                "--task-index", "2")
    assert index.returncode == 2 and "has 2 tasks (0..1)" in index.stderr


def read_csv(path: Path) -> list[tuple[str, int]]:
    with open(path) as handle:
        return [(row["sequence"], int(row["label"])) for row in csv.DictReader(handle)]


@pytest.mark.parametrize("task", ["species", "motif"])
def test_synthetic_task_is_balanced_disjoint_and_reproducible(tmp_path, task):
    rows = write_task(tmp_path / "a", task, species=3, length=64, sizes=(20, 5, 5), seed=1)
    classes = 3 if task == "species" else 2
    assert rows == {"train": 20 * classes, "dev": 5 * classes, "test": 5 * classes}
    splits = {s: read_csv(tmp_path / "a" / f"{s}.csv") for s in ("train", "dev", "test")}
    for split, examples in splits.items():
        per_class = {"train": 20, "dev": 5, "test": 5}[split]
        assert Counter(label for _, label in examples) == dict.fromkeys(range(classes), per_class)
        assert all(len(seq) == 64 and set(seq) <= set("ACGT") for seq, _ in examples)
    seen = [seq for examples in splits.values() for seq, _ in examples]
    assert len(set(seen)) == len(seen)  # no sequence in two splits (or twice in one)
    write_task(tmp_path / "b", task, species=3, length=64, sizes=(20, 5, 5), seed=1)
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
               for f in ("train.csv", "dev.csv", "test.csv"))


def test_motif_task_negatives_keep_the_composition(tmp_path):
    # Positives carry the motif (8% mutated), negatives a shuffle of it: the same 12 bases, reordered,
    # so base composition alone cannot separate the classes.
    write_task(tmp_path, "motif", species=2, length=MOTIF_LENGTH, sizes=(50, 1, 1), seed=3)
    examples = read_csv(tmp_path / "train.csv")
    positives = Counter(seq for seq, label in examples if label == 1)
    motif = positives.most_common(1)[0][0]
    assert positives[motif] > 10  # unmutated copies are the most common positive
    for seq, label in examples:
        if label == 0:
            assert sorted(seq) == sorted(motif) and seq != motif


def test_synthetic_cli_writes_a_task(tmp_path):
    proc = subprocess.run([sys.executable, "data_prep/synthetic.py", "--task", "species",
                           "--out", str(tmp_path), "--species", "2", "--seq-length", "32",
                           "--train-per-class", "4", "--eval-per-class", "2"],
                          cwd=REPO, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train 8, dev 4, test 4 rows" in proc.stdout
    bad = subprocess.run([sys.executable, "data_prep/synthetic.py", "--task", "species",
                          "--out", str(tmp_path), "--species", "1"],
                         cwd=REPO, capture_output=True, text=True, check=False, timeout=120)
    assert bad.returncode == 2 and "--species >= 2" in bad.stderr
