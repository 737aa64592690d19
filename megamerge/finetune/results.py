"""What a fine-tuning run leaves behind, and how to load a fine-tuned model back.

    OUT/results.json                       the run: settings, per-seed dev/test metrics, mean ± std
    OUT/tensorboard/seed<k>/               train loss per step, dev metrics per epoch, test once
    OUT/seed<k>/finetune_config.json       the spec build_task_model rebuilds the model from
    OUT/seed<k>/head.safetensors           the task head (weight, bias)
    OUT/seed<k>/test_outputs.npz           the head's test outputs, file order: `outputs` (logits
                                           [S, C], regression values [S], per-base logits of all
                                           bases concatenated [sum n_i, C]) and `lengths` [S]
    OUT/seed<k>/adapter_model.safetensors  LoRA only: peft's save_pretrained (with adapter_config.json);
    OUT/seed<k>/adapter_config.json        never a copy of the backbone
    OUT/seed<k>/model/                     full fine-tuning only: the fine-tuned backbone, portable
                                           format (encoder-only for MergeDNA sequence tasks)

test_std is the sample standard deviation over seeds (0 for one seed).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file

from megamerge.finetune.build import build_task_model
from megamerge.finetune.heads import TaskModel, bare_model
from megamerge.finetune.loop import LoopSettings
from megamerge.portable import save_portable, write_portable_state

SPEC_FILE = "finetune_config.json"
HEAD_FILE = "head.safetensors"
TEST_OUTPUTS_FILE = "test_outputs.npz"
FULL_MODEL_DIR = "model"
RESULTS_FILE = "results.json"


def seed_dir(out: str | Path, seed: int) -> Path:
    return Path(out) / f"seed{seed}"


def save_seed_run(model: TaskModel, spec: dict, directory: str | Path,
                  test_outputs: list[np.ndarray]) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(o) if spec["task_type"] == "per_base" else 1 for o in test_outputs],
                       dtype=np.int64)
    stacked = np.concatenate(test_outputs) if spec["task_type"] == "per_base" else np.stack(test_outputs)
    np.savez(directory / TEST_OUTPUTS_FILE, outputs=stacked, lengths=lengths)
    head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    save_file(head, str(directory / HEAD_FILE))
    core = bare_model(model.backbone)
    if spec["method"] == "lora":
        model.backbone.save_pretrained(str(directory))
    elif spec["method"] == "full":
        if spec["family"] == "mergedna" and spec["task_type"] != "per_base":
            write_portable_state(core.state_dict(), "mergedna", core.cfg.to_dict(),
                                 directory / FULL_MODEL_DIR, encoder_only=True)
        else:
            save_portable(core, directory / FULL_MODEL_DIR)
    (directory / SPEC_FILE).write_text(json.dumps(spec, indent=1) + "\n")
    return directory


def load_finetuned(directory: str | Path, model_dir: str | Path | None = None,
                   device: str = "cpu") -> TaskModel:
    """The model a run saved in OUT/seed<k>/, in eval mode, its spec as `.spec`. LoRA and probe runs
    rebuild the backbone from the portable model they started from (spec["model"], or `model_dir` if
    it moved; a from-scratch run re-draws its random initialisation from the seed)."""
    directory = Path(directory)
    spec_path = directory / SPEC_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path} not found: {directory} is not a fine-tuned seed directory")
    spec = json.loads(spec_path.read_text())
    if spec["method"] == "full":
        model = build_task_model({**spec, "from_scratch": False}, directory / FULL_MODEL_DIR)
    elif spec["method"] == "lora":
        model = build_task_model(spec, model_dir, adapter_dir=directory)
    else:
        model = build_task_model(spec, model_dir)
    model.head.load_state_dict(load_file(str(directory / HEAD_FILE)))
    model.spec = spec
    return model.to(device).eval()


def eval_settings(spec: dict, batch_size: int = 64) -> LoopSettings:
    """What loop.predict_split needs to score a loaded model as the run did (regression units)."""
    return LoopSettings(lr=0.0, eval_batch_size=batch_size, label_mean=spec["label_mean"],
                        label_std=spec["label_std"], progress=False)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def write_results(out: str | Path, record: dict) -> Path:
    path = Path(out) / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path
