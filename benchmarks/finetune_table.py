#!/usr/bin/env python
"""Pre-trained against from-scratch, per task, from tools/evaluate_suite.py runs: the table of
BENCHMARKS.md "Fine-tuning (issue 14)".

    python benchmarks/finetune_table.py runs/ft20/lora
    python benchmarks/finetune_table.py runs/ft20/full_lr1e-3 runs/ft20/full_lr1e-4   # lr chosen on dev

Each SUITE is an evaluate_suite.py --compare-scratch output directory (OUT/<arm>/<task>/results.json).
With several suites (the same tasks at different settings, e.g. one learning rate each), each arm
keeps, task by task, the suite with the higher dev mean of the headline metric; test is never used to
choose. A row gives the test mean ± sample std over seeds, the seeds' values, and whether pre-training
wins by the mean and by the median over seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ablation import finetune_summary
from megamerge.finetune.suite import ARM_TITLES, ARMS, read_result


def load_suite(suite: Path) -> dict[str, dict[str, dict]]:
    """arm -> task name (its path under the arm) -> finetune_summary of its results.json."""
    return {arm: {path.parent.relative_to(suite / arm).as_posix(): finetune_summary(read_result(path))
                  for path in sorted((suite / arm).glob("**/results.json"))}
            for arm in ARMS}  # fmt: skip


def chosen(candidates: list[tuple[str, dict]]) -> tuple[str, dict]:
    """The (suite, summary) with the highest dev mean: the dev split picks, test never does."""
    return max(candidates, key=lambda item: item[1]["dev_mean"])


def describe(name: str, summary: dict, candidates: list[tuple[str, dict]]) -> str:
    values = summary["seeds"]
    text = f"{summary['mean']:.3f} ± {summary['std']:.3f} (seeds {', '.join(f'{v:.3f}' for v in values)})"
    if len(candidates) > 1:
        devs = ", ".join(f"{suite}: {r['dev_mean']:.3f}" for suite, r in candidates)
        text = f"{name} (dev {devs}) → {text}"
    return text


def table(suites: list[Path]) -> str:
    loaded = {suite.name: load_suite(suite) for suite in suites}
    tasks = sorted(set.intersection(*(set(runs[arm]) for runs in loaded.values() for arm in ARMS)))
    if not tasks:
        raise SystemExit(f"no task has results for both arms in every suite of {[str(s) for s in suites]}")
    lines = [f"| task | {' | '.join(ARM_TITLES[arm] for arm in ARMS)} | pre-trained wins (mean / median) |",
             f"|---|{'---|' * len(ARMS)}---|"]
    means = {arm: [] for arm in ARMS}
    wins = {"mean": 0, "median": 0}
    for task in tasks:
        cells, picked = {}, {}
        for arm in ARMS:
            candidates = [(name, runs[arm][task]) for name, runs in loaded.items()]
            name, summary = chosen(candidates)
            picked[arm] = summary
            means[arm].append(summary["mean"])
            cells[arm] = describe(name, summary, candidates)
        by_mean = picked["pretrained"]["mean"] > picked["scratch"]["mean"]
        by_median = statistics.median(picked["pretrained"]["seeds"]) > statistics.median(
            picked["scratch"]["seeds"]
        )
        wins["mean"] += by_mean
        wins["median"] += by_median
        lines.append(
            f"| {task} | {' | '.join(cells[arm] for arm in ARMS)} | {'yes' if by_mean else 'no'} / "
            f"{'yes' if by_median else 'no'} |"
        )
    lines.append(
        f"| **mean over {len(tasks)} tasks** | "
        f"{' | '.join(f'{statistics.fmean(means[arm]):.3f}' for arm in ARMS)} | "
        f"{wins['mean']} of {len(tasks)} / "
        f"{wins['median']} of {len(tasks)} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "suites", nargs="+", type=Path, help="evaluate_suite.py --compare-scratch output directories"
    )
    args = parser.parse_args(argv)
    print(table(args.suites))
    return 0


if __name__ == "__main__":
    sys.exit(main())
