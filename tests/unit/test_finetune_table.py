"""benchmarks/finetune_table.py: each arm's setting is chosen on dev, never on test, and the wins are
counted by the mean and by the median over seeds."""

import json
from pathlib import Path

from benchmarks.finetune_table import table


def write_results(suite: Path, arm: str, task: str, dev: float, tests: list[float]) -> None:
    path = suite / arm / task / "results.json"
    path.parent.mkdir(parents=True)
    per_seed = [{"seed": i, "dev": {"mcc": dev}, "test": {"mcc": value}} for i, value in enumerate(tests)]
    path.write_text(json.dumps({"metric": "mcc", "dev_mean": dev, "per_seed": per_seed}))


def test_setting_chosen_on_dev_and_wins_counted(tmp_path):
    low, high = tmp_path / "lr1e-4", tmp_path / "lr1e-3"
    # tf/0: the better dev (lr1e-4) has the worse test for pre-trained: dev must pick it anyway
    write_results(low, "pretrained", "tf/0", dev=0.30, tests=[0.10, 0.10, 0.10])
    write_results(high, "pretrained", "tf/0", dev=0.20, tests=[0.90, 0.90, 0.90])
    write_results(low, "scratch", "tf/0", dev=0.10, tests=[0.50, 0.50, 0.50])
    write_results(high, "scratch", "tf/0", dev=0.25, tests=[0.05, 0.05, 0.05])
    # tf/1: pre-trained wins by the mean (one scratch seed collapsed) but not by the median
    write_results(low, "pretrained", "tf/1", dev=0.3, tests=[0.30, 0.30, 0.30])
    write_results(high, "pretrained", "tf/1", dev=0.1, tests=[0.00, 0.00, 0.00])
    write_results(low, "scratch", "tf/1", dev=0.3, tests=[0.40, 0.40, 0.00])
    write_results(high, "scratch", "tf/1", dev=0.1, tests=[0.00, 0.00, 0.00])
    rows = table([low, high]).splitlines()
    tf0 = next(row for row in rows if row.startswith("| tf/0 "))
    assert "lr1e-4 (dev lr1e-4: 0.300, lr1e-3: 0.200) → 0.100 ± 0.000" in tf0  # pre-trained: dev's pick
    assert "lr1e-3 (dev lr1e-4: 0.100, lr1e-3: 0.250) → 0.050 ± 0.000" in tf0  # scratch: dev's pick
    assert tf0.endswith("| yes / yes |")
    tf1 = next(row for row in rows if row.startswith("| tf/1 "))
    assert tf1.endswith("| yes / no |")
    assert rows[-1] == "| **mean over 2 tasks** | 0.200 | 0.158 | 2 of 2 / 1 of 2 |"


def test_one_suite_has_no_choice_to_show_and_a_tie_is_no_win(tmp_path):
    write_results(tmp_path / "lora", "pretrained", "prom/a", dev=0.2, tests=[0.25, 0.75])
    write_results(tmp_path / "lora", "scratch", "prom/a", dev=0.2, tests=[0.5, 0.5])
    row = table([tmp_path / "lora"]).splitlines()[2]
    assert (
        row
        == "| prom/a | 0.500 ± 0.354 (seeds 0.250, 0.750) | 0.500 ± 0.000 (seeds 0.500, 0.500) | no / no |"
    )
