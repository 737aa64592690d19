"""Every head and method of tools/finetune.py learns a small synthetic task and beats chance clearly
(chance: MCC 0, Pearson 0). The tasks hinge on GC content, which a randomly initialised model's
pooled states already expose, so a few dozen steps suffice; seeds are fixed."""

from __future__ import annotations

import json

import pytest
import torch

from megamerge.finetune.run import run
from megamerge.vocabulary import PAD
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
    ("mergedna", "binary", "probe", ["--lr", "1e-2", "--eval-compression", "0.75"], 0.7),
    ("mergedna", "binary", "full", ["--lr", "3e-3", "--pooling", "mean_bases", "--from-scratch"], 0.7),
    ("mergedna", "three", "lora", ["--lr", "3e-3", "--adapt-tokenizer"], 0.4),
    ("mergedna", "regression", "lora", ["--lr", "3e-3"], 0.6),
    ("mergedna", "per_base", "lora", ["--lr", "3e-3"], 0.5),
    ("carmania", "binary", "lora", ["--lr", "3e-3"], 0.7),
    ("carmania", "binary", "probe", ["--lr", "1e-2", "--pooling", "last"], 0.3),  # the last base sees 16
    ("carmania", "per_base", "full", ["--lr", "3e-3"], 0.5),
]


@pytest.mark.parametrize("family,kind,method,flags,floor", CASES,
                         ids=["-".join((c[0], c[1], c[2], *[f for f in c[3] if f.startswith("--p")]))
                              for c in CASES])
def test_head_and_method_learn(workspace, one_thread, family, kind, method, flags, floor):
    root, models, tasks = workspace
    out = root / "out" / f"{family}-{kind}-{method}-{len(flags)}"
    options = build_parser().parse_args(["--model", str(models[family]), "--task", str(tasks[kind]),
                                         "--out", str(out), "--method", method, "--epochs", "3",
                                         "--batch-size", "16", "--seeds", "1", "--no-progress", *flags])
    record = run(options)
    assert record["metric"] == ("pearson" if kind == "regression" else "mcc")
    assert record["task_type"] == {"binary": "classification", "three": "classification"}.get(kind, kind)
    assert record["test_mean"] > floor, record["per_seed"]
    assert json.loads((out / "results.json").read_text())["test_mean"] == pytest.approx(record["test_mean"])
    assert list((out / "tensorboard" / "seed0").glob("events.out.tfevents.*"))


def test_pooling_weights_and_eval_compression(workspace, one_thread):
    from megamerge.finetune.build import load_backbone
    from megamerge.finetune.heads import mergedna_sequence_states, pool

    _, models, _ = workspace
    ids = torch.randint(0, 4, (2, 40))
    ids[1, 24:] = PAD
    for ratio in (0.5, 0.75):
        model, family = load_backbone(models["mergedna"], "classification", False, 0, ratio)
        assert family == "mergedna" and not model.training
        with torch.no_grad():
            states, by_token = mergedna_sequence_states(model, ids, "mean_tokens")
            _, by_base = mergedna_sequence_states(model, ids, "mean_bases")
        assert by_token.sum(1).tolist() == [round(ratio * 40), round(ratio * 24)]  # the fixed eval ratio
        assert by_base.sum(1).tolist() == [40, 24]  # every valid base counted once
        assert ((by_base > 0) == (by_token > 0)).all()
        expected = (states[1, :by_token[1].sum().long()]
                    * by_base[1, :by_token[1].sum().long(), None]).sum(0) / 24
        torch.testing.assert_close(pool(states, by_base, "mean_bases")[1], expected)
    with pytest.raises(ValueError, match="eval_compression=1.5 must lie in"):
        load_backbone(models["mergedna"], "classification", False, 0, 1.5)
