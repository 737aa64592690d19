"""Build a TaskModel from a run spec (the dict saved as OUT/seed<k>/finetune_config.json): the same
code builds it before training and when a saved run is loaded back, so both see the same model."""

from __future__ import annotations

from pathlib import Path

import torch

from megamerge.finetune.adapters import apply_lora, load_lora, lora_target_pattern, set_trainable
from megamerge.finetune.heads import TaskModel, drop_decoders
from megamerge.models.registry import build_model
from megamerge.portable import load_portable, read_portable_config


def load_backbone(model_dir: str | Path, task_type: str, from_scratch: bool, init_seed: int,
                  eval_compression: float | None, merge_decisions: str | None = None):
    """-> (bare model in eval mode, family). from_scratch: the portable config's architecture,
    initialised from torch.manual_seed(init_seed). `eval_compression` and `merge_decisions` (MergeDNA;
    None: the model's own) are set on the model's config, which the model reads at every call."""
    config = read_portable_config(model_dir)
    family = config["family"]
    if task_type == "per_base" and config.get("encoder_only") and not from_scratch:
        raise ValueError(f"--model {model_dir} is encoder-only; per-base tasks need MergeDNA's decoders")
    if from_scratch:
        torch.manual_seed(init_seed)
        model = build_model(family, config["model_config"]).eval()
    else:
        model = load_portable(model_dir)
    overrides = {"eval_compression": eval_compression, "merge_decisions": merge_decisions}
    for name, value in overrides.items():
        if value is None:
            continue
        if family != "mergedna":
            raise ValueError(f"--{name.replace('_', '-')} applies to MergeDNA (CARMANIA does not merge)")
        setattr(model.cfg, name, value)
        model.cfg.validate()
    return model, family


def build_task_model(spec: dict, model_dir: str | Path | None = None, adapter_dir: str | Path | None = None
                     ) -> TaskModel:
    """spec keys: model, family, method, task_type, num_outputs, pooling, from_scratch, seed,
    eval_compression, lora_rank, lora_alpha, target_modules, adapt_tokenizer, and optionally
    merge_decisions (specs saved before it have none: the model's own). `model_dir` overrides
    spec["model"]; `adapter_dir` loads saved LoRA adapters instead of creating fresh ones."""
    torch.manual_seed(spec["seed"])
    model, family = load_backbone(model_dir or spec["model"], spec["task_type"], spec["from_scratch"],
                                  spec["seed"], spec["eval_compression"], spec.get("merge_decisions"))
    if family == "mergedna" and spec["task_type"] != "per_base":
        drop_decoders(model)
    if spec["method"] == "lora":
        pattern = lora_target_pattern(family, spec["task_type"], spec["target_modules"],
                                      spec["adapt_tokenizer"])
        if adapter_dir is None:
            backbone = apply_lora(model, pattern, spec["lora_rank"], spec["lora_alpha"])
        else:
            backbone = load_lora(model, adapter_dir)
    else:
        backbone = model
        set_trainable(backbone, spec["method"])
    torch.manual_seed(spec["seed"])  # the head's init does not depend on what the backbone drew
    return TaskModel(backbone, family, spec["task_type"], spec["num_outputs"], spec["pooling"])
