"""tools/finetune.py under torchrun: 2 gloo ranks, each running its disjoint share of every global batch,
compute the same step as 1 rank with the same global batch (a global batch of 15 on 2 ranks gives
uneven shards, 8 + 7). Full fine-tuning, so every backbone gradient goes through the all-reduce.

Two checks, each exact by design on any CPU (issue 31):
* before any update, the summed gradients and the loss equal one rank's to float summation order
  (a negative control in the same test: one rank's share without the all-reduce, or the sum
  counted twice, is far outside the bound);
* the whole protocol (epochs, dev selection, test scored once, outputs gathered in file order) at
  a learning rate so small that no step moves a weight by more than ~1e-11 (PROTOCOL_LR): dev and
  test metrics, outputs and training losses equal one rank's to summation order. With a real
  learning rate, AdamW's first steps (about lr x sign(g)) and the hard merge ranking turn an ulp
  into a different run: an after-update comparison would measure the CPU's kernels, not the data
  parallelism (issue 31)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests.helpers import REPO, TORCHRUN, describe, free_port, subprocess_env
from tests.unit.finetune_tasks import gc_task, micro_mergedna

pytestmark = pytest.mark.layout_equivalence

# Float32 summation order moves a sum of n terms by ~n x 6e-8 of its largest term; the gradients
# here sum at most a few thousand products, so 1e-5 of the largest gradient bounds the reordering
# with margin, while a missing all-reduce or a doubled sum is off by tens of percent of it.
GRADIENT_REL = 1e-5
# Forward passes alone (no update): measured ~1e-7 between 1 and 2 ranks on AVX-512 and on ATen's
# `default` kernels, for outputs of order 1.
OUTPUT_ATOL = 1e-5
# AdamW moves a weight by at most ~3 x lr a step (|m / sqrt(v)| <= (1 - beta1) / sqrt(1 - beta2)):
# ten steps at 1e-12 stay far below every bound here, on any CPU.
PROTOCOL_LR = "1e-12"


def torchrun(nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    command = [str(TORCHRUN), "--nproc-per-node", str(nproc), "--master-port", str(free_port()), *args]
    proc = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, describe(proc)
    return proc


@pytest.fixture(scope="module")
def model_and_task(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune_dp")
    return (micro_mergedna(tmp / "model"),
            gc_task(tmp / "task", "binary", sizes={"train": 64, "dev": 32, "test": 32}), tmp)


def step_gradients(nproc: int, model, task, out) -> dict:
    torchrun(nproc, ["-m", "tests.distributed.workers.finetune_gradients", str(model), str(task), str(out)])
    return dict(np.load(out))


def gradient_mismatch(reference: dict, got: dict, prefix: str) -> float:
    """The largest gradient difference as a fraction of the largest reference gradient."""
    names = [k.removeprefix("summed/") for k in reference if k.startswith("summed/")]
    scale = max(np.abs(reference[f"summed/{n}"]).max() for n in names)
    return max(np.abs(got[f"{prefix}/{n}"] - reference[f"summed/{n}"]).max() for n in names) / scale


def test_two_ranks_sum_the_gradient_of_one_rank(model_and_task):
    model, task, tmp = model_and_task
    one = step_gradients(1, model, task, tmp / "one.npz")
    two = step_gradients(2, model, task, tmp / "two.npz")
    assert float(two["loss"]) == pytest.approx(float(one["loss"]), rel=1e-6)
    assert gradient_mismatch(one, two, "summed") <= GRADIENT_REL
    # negative controls: each is a real data-parallel bug
    assert gradient_mismatch(one, two, "alone") > 100 * GRADIENT_REL  # rank 0's share, no all-reduce
    assert gradient_mismatch(one, two, "twice") > 100 * GRADIENT_REL  # summed twice (a doubled norm)


def finetune(nproc: int, model, task, out) -> dict:
    proc = torchrun(nproc, [str(REPO / "tools" / "finetune.py"), "--model", str(model), "--task", str(task),
                            "--out", str(out), "--method", "full", "--lr", PROTOCOL_LR, "--weight-decay", "0",
                            "--epochs", "2", "--batch-size", "15", "--seeds", "1", "--eval-batch-size", "16",
                            "--no-progress"])
    assert proc.stdout.count("test mcc") == 1, proc.stdout  # only rank 0 reports
    return json.loads((out / "results.json").read_text())


def test_two_ranks_run_the_protocol_of_one_rank(model_and_task):
    model, task, tmp = model_and_task
    one = finetune(1, model, task, tmp / "one")
    two = finetune(2, model, task, tmp / "two")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    a, b = one["per_seed"][0], two["per_seed"][0]
    assert a["steps"] == b["steps"] == 2 * 5
    assert a["best_epoch"] == b["best_epoch"]
    for epoch_a, epoch_b in zip(a["dev_history"], b["dev_history"], strict=True):
        assert epoch_b["train_loss"] == pytest.approx(epoch_a["train_loss"], rel=1e-6)
        for name in ("mcc", "accuracy", "f1_macro", "auroc"):
            assert epoch_b[name] == pytest.approx(epoch_a[name], abs=1e-9), name
    assert b["test"] == pytest.approx(a["test"], abs=1e-9)
    outputs_one = np.load(tmp / "one" / "seed0" / "test_outputs.npz")["outputs"]
    outputs_two = np.load(tmp / "two" / "seed0" / "test_outputs.npz")["outputs"]
    np.testing.assert_allclose(outputs_two, outputs_one, rtol=0, atol=OUTPUT_ATOL)
