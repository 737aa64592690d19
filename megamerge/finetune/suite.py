"""A fine-tuning suite: `tools/finetune.py` over every task directory under a root (a GUE-style tree),
then one table with the pre-trained and from-scratch results side by side.

Layout of a suite's output directory:

    OUT/suite_config.json              what was run (model, finetune flags): a resumed suite must match
    OUT/<arm>/<task>/results.json      one finetune run per arm and task (arm: pretrained | scratch)
    OUT/<arm>/<task>/finetune.log      its stdout and stderr
    OUT/summary.json, OUT/summary.md   written from whatever results.json files exist

A task is a directory holding a train, a dev and a test file; its name is its path relative to the
root (`tf/0`), its group the path above it (`tf`). Two suite means are reported, both over each task's
mean over seeds: the mean over tasks (GUE's convention) and the mean of group means (Genomic
Benchmarks' figure in the paper); `headline` says which one a summary prints first.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "dev", "test")
SPLIT_SUFFIXES = (".csv", ".tsv", ".parquet", ".csv.gz", ".tsv.gz")
ARMS = ("pretrained", "scratch")
ARM_TITLES = {"pretrained": "pre-trained", "scratch": "from scratch"}
HEADLINES = ("tasks", "groups")
# Flags the suite sets itself per run; passing them through would make every run the same task.
RESERVED_FLAGS = ("--model", "--task", "--out", "--from-scratch")
FINETUNE = Path(__file__).resolve().parents[2] / "tools" / "finetune.py"


class SuiteError(RuntimeError):
    pass


@dataclass(frozen=True)
class Task:
    name: str  # path relative to the suite root, POSIX style: "tf/0"
    group: str  # the path above it ("tf"), or "." for a task directly under the root
    path: Path


def split_file(directory: Path, split: str) -> Path | None:
    for suffix in SPLIT_SUFFIXES:
        if (directory / f"{split}{suffix}").is_file():
            return directory / f"{split}{suffix}"
    return None


def _natural_key(name: str) -> list:
    # "tf/10" after "tf/9": numbers compare as numbers.
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def find_tasks(root: Path) -> list[Task]:
    """Every directory under `root` (itself included) with a train, a dev and a test file."""
    root = Path(root)
    if not root.is_dir():
        raise SuiteError(f"--tasks {root}: not a directory")
    candidates = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
    tasks, partial = [], []
    for directory in candidates:
        present = [s for s in SPLITS if split_file(directory, s)]
        if len(present) == len(SPLITS):
            rel = directory.relative_to(root).as_posix()
            name = rel if rel != "." else root.name
            group = Path(rel).parent.as_posix() if rel != "." else "."
            tasks.append(Task(name, group, directory))
        elif present:
            missing = sorted(set(SPLITS) - set(present))
            partial.append(f"{directory} (has {', '.join(present)}; missing {', '.join(missing)})")
    if partial:
        raise SuiteError("task directories with missing splits (need train, dev and test as "
                         f"{'/'.join(SPLIT_SUFFIXES)}): " + "; ".join(partial))
    if not tasks:
        raise SuiteError(f"--tasks {root}: no directory under it holds train, dev and test files")
    return sorted(tasks, key=lambda t: _natural_key(t.name))


def select_tasks(tasks: list[Task], patterns: str | None) -> list[Task]:
    """The tasks whose name matches one of the comma-separated shell patterns (all when None)."""
    if not patterns:
        return tasks
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    unmatched = [p for p in wanted if not any(fnmatch.fnmatchcase(t.name, p) for t in tasks)]
    if unmatched:
        raise SuiteError(f"--only {patterns}: {', '.join(unmatched)} matches no task (tasks: "
                         f"{', '.join(t.name for t in tasks)})")
    return [t for t in tasks if any(fnmatch.fnmatchcase(t.name, p) for p in wanted)]


def check_passthrough(flags: list[str]) -> None:
    for flag in flags:
        if flag.split("=", 1)[0] in RESERVED_FLAGS:
            raise SuiteError(f"{flag}: set by the suite for each run (use --model, --tasks, --out, "
                             "--compare-scratch or --arms), not passed through to finetune.py")


def result_path(out: Path, arm: str, task: Task) -> Path:
    return Path(out) / arm / task.name / "results.json"


def read_result(path: Path) -> dict | None:
    """A finished run's results.json, or None when the run has not finished (absent or torn file)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def finetune_command(launcher: list[str], model: Path, task: Task, run_dir: Path, arm: str,
                     passthrough: list[str]) -> list[str]:
    scratch = ["--from-scratch"] if arm == "scratch" else []
    return [*launcher, str(FINETUNE), "--model", str(model), "--task", str(task.path), "--out", str(run_dir),
            *scratch, *passthrough]


def write_config(out: Path, config: dict, overwrite: bool) -> None:
    """Record what the suite runs; refuse to resume a suite run with other settings into one table."""
    path = Path(out) / "suite_config.json"
    if path.exists() and not overwrite:
        old = json.loads(path.read_text())
        changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if changed:
            details = "; ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in changed)
            raise SuiteError(f"{path}: this suite was started with other settings ({details}); use another "
                             "--out, or --overwrite-config to mix them knowingly")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: SLURM array elements write the same file at the same moment, and read it first.
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(config, indent=1) + "\n")
    os.replace(partial, path)


def run_one(command: list[str], run_dir: Path) -> tuple[int, float]:
    """Run one finetune command with its output in run_dir/finetune.log -> (exit code, seconds)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(run_dir / "finetune.log", "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    return code, time.time() - t0


def run_tasks(out: Path, model: Path, tasks: list[Task], arms: list[str], passthrough: list[str],
              launcher: list[str] | None = None, progress: bool = True) -> list[str]:
    """Fine-tune every (arm, task) whose results.json is missing. -> failures, as messages."""
    from tqdm import tqdm

    launcher = launcher or [sys.executable]
    jobs = [(arm, task) for task in tasks for arm in arms]
    failures = []
    bar = tqdm(jobs, desc="suite", unit="run", disable=not progress or None)
    for arm, task in bar:
        bar.set_postfix_str(f"{arm} {task.name}")
        path = result_path(out, arm, task)
        if read_result(path) is not None:
            continue
        code, _ = run_one(finetune_command(launcher, model, task, path.parent, arm, passthrough), path.parent)
        if code != 0 or read_result(path) is None:
            log = path.parent / "finetune.log"
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-5:])
            failures.append(f"{arm} {task.name}: finetune.py exit {code}; see {log}\n{tail}")
    return failures


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _throughput(result: dict) -> float | None:
    """Training sequences per second from a results.json, whatever key finetune.py names it with."""
    for key in ("train_sequences_per_s", "sequences_per_s", "throughput_seq_per_s", "throughput"):
        value = result.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dict):
            for inner in ("train_sequences_per_s", "sequences_per_s", "train"):
                if isinstance(value.get(inner), (int, float)):
                    return float(value[inner])
    return None


def _wall(result: dict) -> float | None:
    for key in ("wall_time_s", "wall_s", "wall_seconds", "seconds"):
        if isinstance(result.get(key), (int, float)):
            return float(result[key])
    return None


def arm_cell(result: dict, source: Path) -> dict:
    """One arm of one task row, from its results.json."""
    metric = result.get("metric")
    per_seed = result.get("per_seed") or []
    if not metric or not per_seed:
        raise SuiteError(f"{source}: results.json needs 'metric' and a non-empty 'per_seed'")
    try:
        test = [float(s["test"][metric]) for s in per_seed]
        dev = [float(s["dev"][metric]) for s in per_seed]
    except (KeyError, TypeError) as e:
        raise SuiteError(f"{source}: per_seed entries need dev and test values of '{metric}' "
                         f"({e!r})") from None
    dev_mean, dev_std = _mean_std(dev)
    test_mean, test_std = _mean_std(test)
    return {"metric": metric, "method": result.get("method"), "seeds": [s.get("seed") for s in per_seed],
            "best_epochs": [s.get("best_epoch") for s in per_seed], "test": test, "dev": dev,
            "test_mean": test_mean, "test_std": test_std, "dev_mean": dev_mean, "dev_std": dev_std,
            "sequences_per_s": _throughput(result), "wall_s": _wall(result)}


def suite_means(rows: list[dict], arm: str) -> dict | None:
    """Mean over tasks and mean of group means of one arm (None unless every task has that arm)."""
    cells = [(row["group"], row[arm]) for row in rows if row.get(arm)]
    if not cells or len(cells) < len(rows):
        return None
    by_group: dict[str, list[float]] = {}
    for group, cell in cells:
        by_group.setdefault(group, []).append(cell["test_mean"])
    group_means = {g: statistics.fmean(v) for g, v in by_group.items()}
    # Spread over seeds of the suite mean: seed k's mean over tasks (runs that share seed positions).
    seed_counts = {len(cell["test"]) for _, cell in cells}
    per_seed = ([statistics.fmean(cell["test"][k] for _, cell in cells) for k in range(seed_counts.pop())]
                if len(seed_counts) == 1 else [])
    return {"mean_over_tasks": statistics.fmean(c["test_mean"] for _, c in cells),
            "mean_of_group_means": statistics.fmean(group_means.values()), "group_means": group_means,
            "per_seed_mean_over_tasks": per_seed,
            "std_over_seeds": statistics.stdev(per_seed) if len(per_seed) > 1 else None}


def summarize(out: Path, tasks: list[Task], arms: list[str], headline: str = "tasks") -> dict:
    """Rows from the results.json files present; tasks without results are listed as missing."""
    if headline not in HEADLINES:
        raise SuiteError(f"headline must be one of {HEADLINES}, not {headline!r}")
    rows, missing = [], []
    for task in tasks:
        row = {"task": task.name, "group": task.group}
        for arm in arms:
            path = result_path(out, arm, task)
            result = read_result(path)
            row[arm] = arm_cell(result, path) if result is not None else None
            if result is None:
                missing.append(f"{arm} {task.name}")
        rows.append(row)
    summary = {"arms": list(arms), "headline": headline, "rows": rows, "missing": missing,
               "means": {arm: suite_means(rows, arm) for arm in arms}}
    complete = [r for r in rows if all(r.get(a) for a in arms)]
    if len(arms) == 2 and complete:
        summary["pretrained_wins"] = sum(r["pretrained"]["test_mean"] > r["scratch"]["test_mean"]
                                         for r in complete)
        summary["compared_tasks"] = len(complete)
    walls = [r[a]["wall_s"] for r in rows for a in arms if r.get(a) and r[a]["wall_s"] is not None]
    summary["finetune_wall_s_total"] = sum(walls) if walls else None
    return summary


def _cell_text(cell: dict | None) -> str:
    if cell is None:
        return "missing"
    return f"{cell['test_mean']:.3f} ± {cell['test_std']:.3f}"


def _means_text(means: dict | None, key: str) -> str:
    return f"{means[key]:.3f}" if means else "incomplete"


def render_markdown(summary: dict) -> str:
    """summary.md: one row per task, the arms side by side, then the two suite means."""
    arms = summary["arms"]
    metrics = sorted({r[a]["metric"] for r in summary["rows"] for a in arms if r.get(a)})
    both = len(arms) == 2
    header = ["group", "task", *(f"{ARM_TITLES[a]} (test, mean ± std over seeds)" for a in arms)]
    header += ["Δ (pre-trained − scratch)"] if both else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary["rows"]:
        cells = [row["group"], row["task"], *(_cell_text(row.get(a)) for a in arms)]
        if both:
            ok = row.get("pretrained") and row.get("scratch")
            cells.append(f"{row['pretrained']['test_mean'] - row['scratch']['test_mean']:+.3f}" if ok else "")
        lines.append("| " + " | ".join(cells) + " |")
    for key, title in (("mean_over_tasks", "mean over tasks"),
                       ("mean_of_group_means", "mean of group means")):
        cells = ["", f"**{title}**", *(_means_text(summary["means"][a], key) for a in arms)]
        if both:
            p, s = summary["means"]["pretrained"], summary["means"]["scratch"]
            cells.append(f"{p[key] - s[key]:+.3f}" if p and s else "")
        lines.append("| " + " | ".join(cells) + " |")

    headline_key = "mean_over_tasks" if summary["headline"] == "tasks" else "mean_of_group_means"
    rule = ("mean over tasks of each task's mean over seeds (GUE's convention)"
            if summary["headline"] == "tasks"
            else "mean over groups (parent directories) of the mean over their tasks "
                 "(Genomic Benchmarks' figure)")
    notes = [f"Metric: {', '.join(metrics) or 'none yet'} on test, at the epoch chosen on dev, per seed.",
             f"Headline: {rule}. Both means are in the table and in summary.json."]
    for arm in arms:
        means = summary["means"][arm]
        if means:
            spread = (f" ± {means['std_over_seeds']:.3f} over seeds"
                      if means["std_over_seeds"] is not None else "")
            notes.append(f"{ARM_TITLES[arm]}: **{means[headline_key]:.3f}**{spread}")
    if "pretrained_wins" in summary:
        notes.append(f"Pre-training wins on {summary['pretrained_wins']} of "
                     f"{summary['compared_tasks']} tasks.")
    if summary["missing"]:
        notes.append(f"Missing runs ({len(summary['missing'])}): {', '.join(summary['missing'])}.")
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def write_summary(out: Path, summary: dict) -> tuple[Path, Path]:
    out = Path(out)
    json_path, md_path = out / "summary.json", out / "summary.md"
    json_path.write_text(json.dumps(summary, indent=1) + "\n")
    md_path.write_text(render_markdown(summary))
    return json_path, md_path
