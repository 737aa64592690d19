"""The evaluation protocol and what a run saves: test is scored exactly once per seed, with the weights
of the epoch dev chose; LoRA never changes a backbone weight and saves only small adapter files;
every method's saved run loads back and reproduces its test outputs bit for bit."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import torch

from megamerge.finetune import loop
from megamerge.finetune.build import build_task_model
from megamerge.finetune.data_parallel import DataParallel
from megamerge.finetune.heads import bare_model
from megamerge.finetune.loop import LoopSettings, predict_split, run_seed
from megamerge.finetune.results import eval_settings, load_finetuned
from megamerge.finetune.run import make_spec, run
from megamerge.finetune.task_data import load_task
from megamerge.portable import read_portable_weights
from tests.unit.finetune_tasks import gc_task, micro_mergedna
from tools.finetune import build_parser


def options(model, task, out, *flags):
    return build_parser().parse_args(["--model", str(model), "--task", str(task), "--out", str(out),
                                      "--batch-size", "16", "--no-progress", *flags])


def fingerprint(model) -> str:
    digest = hashlib.sha256()
    for p in model.parameters():
        if p.requires_grad:
            digest.update(p.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def test_test_is_scored_once_with_the_dev_selected_epoch(tmp_path, one_thread, monkeypatch):
    model = micro_mergedna(tmp_path / "model")
    task = gc_task(tmp_path / "task", "binary", sizes={"train": 64, "dev": 32, "test": 32})
    # Dev labels inverted: the better the model fits train, the worse dev gets, so dev peaks early and
    # the final weights are not the selected ones.
    with open(task / "dev.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    with open(task / "dev.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([rows[0], *[(s, 1 - int(y)) for s, y in rows[1:]]])
    calls = []
    evaluate = loop.evaluate_split

    def spy(model, data, split, dp, settings):
        metrics, outputs = evaluate(model, data, split, dp, settings)
        calls.append((split, fingerprint(model), metrics))
        return metrics, outputs

    monkeypatch.setattr(loop, "evaluate_split", spy)
    epochs = 3
    record = run(options(model, task, tmp_path / "out", "--method", "full", "--lr", "3e-3",
                         "--epochs", str(epochs), "--seeds", "0,1"))
    assert len(calls) == 2 * (epochs + 1)
    for k, seed in enumerate(record["per_seed"]):
        mine = calls[k * (epochs + 1):(k + 1) * (epochs + 1)]
        assert [c[0] for c in mine] == ["dev"] * epochs + ["test"]  # test once, after every dev score
        dev_scores = [c[2]["mcc"] for c in mine[:-1]]
        assert seed["best_epoch"] == 1 + int(np.argmax(dev_scores))  # the first best dev epoch
        assert seed["best_epoch"] < epochs
        chosen = mine[seed["best_epoch"] - 1]
        test_call = mine[-1]
        assert test_call[1] == chosen[1]  # test ran on exactly the selected epoch's weights...
        assert test_call[1] != mine[epochs - 1][1]  # ...not on the last epoch's
        assert seed["test"] == test_call[2] and seed["dev"] == chosen[2]
        assert [h["mcc"] for h in seed["dev_history"]] == dev_scores


def test_lora_leaves_every_backbone_weight_bit_identical(tmp_path, one_thread):
    model_dir = micro_mergedna(tmp_path / "model")
    data = load_task(gc_task(tmp_path / "task", "binary"))
    spec = make_spec(options(model_dir, tmp_path, tmp_path, "--lora-rank", "2"), data, "mergedna", 0)
    model = build_task_model(spec)
    run_seed(model, data, 0, DataParallel(), LoopSettings(lr=3e-3, epochs=2, batch_size=16, progress=False))
    original = read_portable_weights(model_dir)
    state = bare_model(model.backbone).state_dict()
    base = {k.replace(".base_layer", ""): v for k, v in state.items() if "lora_" not in k}
    encoder = [k for k in original if k.startswith(("local_encoder.", "latent_encoder."))]
    assert sorted(base) == sorted(encoder)  # both decoders dropped for a sequence task
    for name in encoder:
        assert torch.equal(base[name], original[name]), name
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert len(lora_b) == 2 * 7 and all(v.abs().sum() > 0 for v in lora_b)  # 2 blocks x 7 projections trained


@pytest.mark.parametrize("method", ["lora", "full", "probe"])
def test_saved_run_reloads_and_reproduces_test_outputs(tmp_path, one_thread, method):
    model_dir = micro_mergedna(tmp_path / "model")
    kind = "per_base" if method == "full" else "binary"
    task = gc_task(tmp_path / "task", kind, sizes={"train": 32, "dev": 16, "test": 24})
    out = tmp_path / "out"
    run(options(model_dir, task, out, "--method", method, "--lr", "3e-3", "--epochs", "2", "--seeds", "1",
                "--lora-rank", "2"))
    seed_dir = out / "seed0"
    saved = np.load(seed_dir / "test_outputs.npz")
    model = load_finetuned(seed_dir)
    outputs = predict_split(model, load_task(task).test, DataParallel(), eval_settings(model.spec))
    stacked = np.concatenate(outputs) if kind == "per_base" else np.stack(outputs)
    assert np.array_equal(stacked, saved["outputs"])  # bit for bit
    files = {p.name for p in seed_dir.iterdir()}
    backbone_bytes = (model_dir / "model.safetensors").stat().st_size
    if method == "lora":
        assert {"adapter_model.safetensors", "adapter_config.json", "head.safetensors"} <= files
        assert not list(out.rglob("model.safetensors"))  # never a copy of the backbone
        assert (seed_dir / "adapter_model.safetensors").stat().st_size < backbone_bytes / 10
        assert json.loads((seed_dir / "adapter_config.json").read_text())["r"] == 2
    elif method == "full":
        assert (seed_dir / "model" / "model.safetensors").is_file()
    else:
        assert files == {"finetune_config.json", "head.safetensors", "test_outputs.npz"}
