"""tools/finetune.py --merge-decisions: the flag reaches the loaded model's config, changes what the
model computes, is recorded in results.json and the saved spec, survives a reload and an HF export,
and is refused for CARMANIA; specs saved before the flag load with the model's own decisions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from megamerge.finetune.build import build_task_model, load_backbone
from megamerge.finetune.heads import bare_model
from megamerge.finetune.results import load_finetuned
from megamerge.finetune.run import run
from tests.unit.finetune_tasks import gc_task, micro_carmania, micro_mergedna
from tools.finetune import build_parser


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same LoRA run (one seed, one epoch) with the model's own merges and with random ones."""
    root = tmp_path_factory.mktemp("finetune_merge_decisions")
    model = micro_mergedna(root / "model")
    task = gc_task(root / "task", "binary", sizes={"train": 32, "dev": 16, "test": 24})
    records, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # a module fixture runs before the function-scoped one_thread
    for name, flags in (("default", []), ("random", ["--merge-decisions", "random"])):
        options = build_parser().parse_args([
            "--model", str(model), "--task", str(task), "--out", str(root / name), "--epochs", "1",
            "--seeds", "1", "--batch-size", "16", "--lr", "3e-3", "--no-progress", *flags])
        records[name] = run(options)
    torch.set_num_threads(threads)
    return root, records


def test_the_flag_reaches_the_model_and_the_records(runs, one_thread):
    root, records = runs
    assert records["default"]["settings"]["merge_decisions"] == "learned"
    assert records["random"]["settings"]["merge_decisions"] == "random"
    saved = json.loads((root / "random" / "results.json").read_text())
    assert saved["settings"]["merge_decisions"] == "random"
    spec = json.loads((root / "random" / "seed0" / "finetune_config.json").read_text())
    assert spec["merge_decisions"] == "random"
    reloaded = load_finetuned(root / "random" / "seed0")
    assert bare_model(reloaded.backbone).cfg.merge_decisions == "random"
    assert bare_model(load_finetuned(root / "default" / "seed0").backbone).cfg.merge_decisions == "learned"


def test_random_merges_change_what_the_model_computes(runs, one_thread):
    root, _ = runs
    default, random = (np.load(root / name / "seed0" / "test_outputs.npz")["outputs"]
                       for name in ("default", "random"))
    assert default.shape == random.shape
    assert not np.allclose(default, random)  # the same seed and data: only the merges differ


def test_old_specs_take_the_models_own_and_carmania_refuses(runs, tmp_path, one_thread):
    root, _ = runs
    spec = json.loads((root / "random" / "seed0" / "finetune_config.json").read_text())
    del spec["merge_decisions"]  # as saved before the flag existed
    assert bare_model(build_task_model(spec).backbone).cfg.merge_decisions == "learned"
    with pytest.raises(ValueError, match="--merge-decisions applies to MergeDNA"):
        load_backbone(micro_carmania(tmp_path / "carmania"), "classification", False, 0, None, "random")


def test_hf_export_keeps_the_runs_merge_decisions(runs, tmp_path, one_thread):
    from megamerge.hf_export.export import export_finetuned

    root, _ = runs
    out = export_finetuned(root / "random" / "seed0", tmp_path / "hf")
    model_config = json.loads((out / "config.json").read_text())["megamerge_portable"]["model_config"]
    assert model_config["merge_decisions"] == "random"
