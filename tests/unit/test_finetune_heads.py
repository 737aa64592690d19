"""Every head and method of tools/finetune.py learns a small synthetic task and beats chance clearly
(chance: MCC 0, Pearson 0). The tasks hinge on GC content, which a randomly initialised model's
pooled states already expose, so a few dozen steps suffice; seeds are fixed."""

from __future__ import annotations

import json

import pytest

from megamerge.finetune.run import run
from tests.unit.finetune_tasks import gc_task, micro_carmania, micro_mergedna
from tools.finetune import build_parser


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune_heads")
    models = {"mergedna": micro_mergedna(root / "mergedna"), "carmania": micro_carmania(root / "carmania")}
    tasks = {kind: gc_task(root / kind, kind) for kind in ("binary", "three", "regression", "per_base")}
    return root, models, tasks


CASES = [
    # (family, task, method, extra flags, headline floor)
    ("mergedna", "binary", "probe", ["--lr", "1e-2"], 0.7),
    ("mergedna", "binary", "full", ["--lr", "3e-3", "--pooling", "mean_bases", "--from-scratch"], 0.7),
    ("mergedna", "three", "lora", ["--lr", "3e-3", "--adapt-tokenizer"], 0.4),
    ("mergedna", "regression", "lora", ["--lr", "3e-3"], 0.6),
    ("mergedna", "per_base", "lora", ["--lr", "3e-3"], 0.5),
    ("carmania", "binary", "lora", ["--lr", "3e-3"], 0.7),
    ("carmania", "binary", "probe", ["--lr", "1e-2", "--pooling", "last"], 0.3),  # the last base sees 16
]


@pytest.mark.parametrize("family,kind,method,flags,floor", CASES,
                         ids=["-".join((c[0], c[1], c[2], *[f for f in c[3] if f.startswith("--p")])) for c in CASES])
def test_head_and_method_learn(workspace, one_thread, family, kind, method, flags, floor):
    root, models, tasks = workspace
    out = root / "out" / f"{family}-{kind}-{method}-{len(flags)}"
    options = build_parser().parse_args(["--model", str(models[family]), "--task", str(tasks[kind]), "--out", str(out),
                                         "--method", method, "--epochs", "3", "--batch-size", "16", "--seeds", "1",
                                         "--no-progress", *flags])
    record = run(options)
    assert record["metric"] == ("pearson" if kind == "regression" else "mcc")
    assert record["task_type"] == {"binary": "classification", "three": "classification"}.get(kind, kind)
    assert record["test_mean"] > floor, record["per_seed"]
    assert json.loads((out / "results.json").read_text())["test_mean"] == pytest.approx(record["test_mean"])
    assert list((out / "tensorboard" / "seed0").glob("events.out.tfevents.*"))
