#!/usr/bin/env python
"""Fine-tune a portable model on every task under a directory tree and tabulate the results.

    python tools/evaluate_suite.py --model portable/tiny --tasks ../shared/data/benchmarks/GUE \\
        --out runs/gue --compare-scratch --method lora --seeds 3 --max-train-samples 2000

A task is any directory (at any depth, the root included) holding train, dev and test files
(.csv, .tsv or .parquet); it is named by its path under --tasks (`tf/0`) and grouped by the path
above it (`tf`). Every flag this tool does not know is passed to tools/finetune.py unchanged
(--method, --lr, --epochs, --batch-size, --lora-rank, --seeds, --max-steps, --max-train-samples, ...).

Each run writes OUT/<arm>/<task>/results.json (arm: pretrained, and scratch with --compare-scratch,
the same architecture from a random initialisation with the same fine-tuning budget). The suite is
resumable: a run whose results.json exists is skipped, so rerunning the same command after an
interruption finishes the rest. OUT/summary.json and OUT/summary.md hold one row per task with the
arms side by side and two suite means, both over each task's mean over seeds: the mean over tasks
(GUE's convention, printed by default) and the mean of group means (the paper's Genomic Benchmarks
figure; --headline groups prints that one).

On a SLURM cluster, slurm/finetune_suite.sh runs one task per array element (--task-index) and then
a dependent --summarize-only job.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from megamerge.finetune.suite import (
    ARMS,
    HEADLINES,
    SuiteError,
    check_passthrough,
    find_tasks,
    render_markdown,
    run_tasks,
    select_tasks,
    summarize,
    write_config,
    write_summary,
)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)  # a finetune flag must never match one of ours by prefix
    ap.add_argument("--model", type=Path, help="portable model directory (tools/convert_checkpoint.py --out)")
    ap.add_argument("--tasks", type=Path, required=True, help="root of the task tree, e.g. GUE/")
    ap.add_argument("--out", type=Path, help="suite output directory")
    ap.add_argument("--compare-scratch", action="store_true",
                    help="also fine-tune the same architecture from a random initialisation (the baseline)")
    ap.add_argument("--arms", default=None,
                    help="comma-separated arms to run now (pretrained, scratch; default: those the table "
                         "has), e.g. to run the two arms of a --compare-scratch suite in two processes")
    ap.add_argument("--headline", choices=HEADLINES, default="tasks",
                    help="which suite mean summary.md prints first: over tasks, or of group means")
    ap.add_argument("--launcher", default=None,
                    help="command that runs tools/finetune.py, word-split (default: this Python); e.g. "
                         "'torchrun --nproc-per-node 8' or 'srun --ntasks 8 python'")
    ap.add_argument("--only", default=None,
                    help="comma-separated shell patterns over task names: run and tabulate only those "
                         "(e.g. 'tf/*' or 'tf/0,tf/1')")
    ap.add_argument("--task-index", type=int, default=None,
                    help="run only the task with this index in --list-tasks order (one SLURM array element)")
    ap.add_argument("--list-tasks", action="store_true", help="print the tasks found, one per line, and exit")
    ap.add_argument("--summarize-only", action="store_true",
                    help="run nothing; write the summary from the results present (exit 1 if any is missing)")
    ap.add_argument("--overwrite-config", action="store_true",
                    help="resume into OUT even if it was started with other settings")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args, passthrough = ap.parse_known_args(argv)
    if not args.list_tasks:
        for flag in ("model", "out"):
            if getattr(args, flag) is None:
                ap.error(f"--{flag} is required (except with --list-tasks)")
    return ap, args, passthrough


def main(argv=None) -> int:
    ap, args, passthrough = parse_args(argv)
    try:
        check_passthrough(passthrough)
        tasks = select_tasks(find_tasks(args.tasks), args.only)
        if args.list_tasks:
            print("\n".join(t.name for t in tasks))
            return 0
        arms = list(ARMS) if args.compare_scratch else ["pretrained"]
        run_arms = [a.strip() for a in args.arms.split(",")] if args.arms else arms
        if not run_arms or not set(run_arms) <= set(arms):
            ap.error(f"--arms {args.arms}: choose among {', '.join(arms)} (scratch needs --compare-scratch)")
        if args.task_index is not None:
            if not 0 <= args.task_index < len(tasks):
                ap.error(f"--task-index {args.task_index}: {args.tasks} has {len(tasks)} tasks "
                         f"(0..{len(tasks) - 1})")
            selected = [tasks[args.task_index]]
        else:
            selected = tasks
        if not args.summarize_only and not (args.model / "config.json").is_file():
            ap.error(f"--model {args.model}: no config.json there (a portable model directory is needed; "
                     "convert a DeepSpeed checkpoint with tools/convert_checkpoint.py --load CKPT --out DIR)")
        failures = []
        t0 = time.time()
        if not args.summarize_only:
            write_config(args.out, {"model": str(args.model.resolve()), "tasks": str(args.tasks.resolve()),
                                    "arms": arms, "finetune_flags": passthrough}, args.overwrite_config)
            launcher = shlex.split(args.launcher) if args.launcher else None
            failures = run_tasks(args.out, args.model, selected, run_arms, passthrough, launcher,
                                 progress=not args.no_progress)
        if args.task_index is None:
            summary = summarize(args.out, tasks, arms, args.headline)
            summary["suite_wall_s_this_invocation"] = time.time() - t0
            json_path, md_path = write_summary(args.out, summary)
            print(render_markdown(summary))
            print(f"wrote {json_path} and {md_path}")
            if args.summarize_only and summary["missing"]:
                failures.append(f"{len(summary['missing'])} runs have no results.json: "
                                f"{', '.join(summary['missing'])}")
    except SuiteError as e:
        print(f"evaluate_suite: error: {e}", file=sys.stderr)
        return 2
    for failure in failures:
        print(f"evaluate_suite: failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
