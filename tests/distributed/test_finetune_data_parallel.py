"""tools/finetune.py under torchrun: 2 gloo ranks, each running its disjoint share of every global batch,
give the same training losses, dev/test metrics and test outputs as 1 rank with the same global batch.
Full fine-tuning, so every backbone gradient goes through the all-reduce; a global batch of 15 on 2
ranks gives uneven shards (8 + 7) and a short last batch."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests.helpers import REPO, TORCHRUN, describe, free_port, subprocess_env
from tests.unit.finetune_tasks import gc_task, micro_mergedna


def finetune(nproc: int, model, task, out) -> dict:
    command = [str(TORCHRUN), "--nproc-per-node", str(nproc), "--master-port", str(free_port()),
               str(REPO / "tools" / "finetune.py"), "--model", str(model), "--task", str(task), "--out", str(out),
               "--method", "full", "--lr", "3e-3", "--epochs", "2", "--batch-size", "15", "--seeds", "1",
               "--eval-batch-size", "16", "--no-progress"]
    proc = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.count("test mcc") == 1, proc.stdout  # only rank 0 reports
    return json.loads((out / "results.json").read_text())


def test_two_ranks_match_one_rank(tmp_path):
    model = micro_mergedna(tmp_path / "model")
    task = gc_task(tmp_path / "task", "binary", sizes={"train": 64, "dev": 32, "test": 32})
    one = finetune(1, model, task, tmp_path / "one")
    two = finetune(2, model, task, tmp_path / "two")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    a, b = one["per_seed"][0], two["per_seed"][0]
    assert a["steps"] == b["steps"] == 2 * 5
    assert a["best_epoch"] == b["best_epoch"]
    # The gradient sums differ from one rank's only in float summation order (~1e-7), which AdamW's
    # first steps (update ~ lr * sign(g)) amplify to ~1e-4 after a few steps; a wrong shard or a wrong
    # normalisation would be off by far more.
    for epoch_a, epoch_b in zip(a["dev_history"], b["dev_history"], strict=True):
        assert epoch_b["train_loss"] == pytest.approx(epoch_a["train_loss"], rel=1e-3)
        for name in ("mcc", "accuracy", "f1_macro", "auroc"):
            assert epoch_b[name] == pytest.approx(epoch_a[name], abs=1e-9), name
    assert b["test"] == pytest.approx(a["test"], abs=1e-9)
    outputs_one = np.load(tmp_path / "one" / "seed0" / "test_outputs.npz")["outputs"]
    outputs_two = np.load(tmp_path / "two" / "seed0" / "test_outputs.npz")["outputs"]
    np.testing.assert_allclose(outputs_two, outputs_one, rtol=0, atol=2e-3)
