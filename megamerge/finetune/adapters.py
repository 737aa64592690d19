"""What each fine-tuning method trains, and LoRA through peft.

    lora   peft LoRA adapters on the projections named by --target-modules (default: every attention
           and MLP projection, wq wk wv wo w1 w2 w3) of the Latent Encoder's blocks, plus the head. The
           Local Encoder (the learned tokenizer) stays frozen unless --adapt-tokenizer, which also puts
           adapters on its blocks and on its mergers' grouping projections. Per-base tasks also adapt
           the blocks of the two decoders they run through.
           For CARMANIA: the same projections of every block (--adapt-tokenizer does not apply).
    full   every backbone weight on the task's path, plus the head.
    probe  the head alone on the frozen backbone.

Adapters are saved with peft's own save_pretrained (adapter_model.safetensors, adapter_config.json),
never with a copy of the backbone, and loaded back with PeftModel.from_pretrained. peft is imported
only when LoRA is used: it brings in transformers, whose import costs seconds.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

METHODS = ("lora", "full", "probe")
PROJECTIONS = {"wq": "attention", "wk": "attention", "wv": "attention", "wo": "attention",
               "w1": "feed_forward", "w2": "feed_forward", "w3": "feed_forward"}
DEFAULT_TARGETS = tuple(PROJECTIONS)


def check_targets(targets: list[str] | tuple[str, ...]) -> None:
    unknown = sorted(set(targets) - set(PROJECTIONS))
    if unknown or not targets:
        raise ValueError(f"--target-modules {unknown or '(none)'}: choose among {' '.join(PROJECTIONS)}")


def lora_target_pattern(family: str, task_type: str, targets: list[str] | tuple[str, ...],
                        adapt_tokenizer: bool) -> str:
    """The regular expression (peft full-matches module names with it) selecting the LoRA targets."""
    check_targets(targets)
    if family == "carmania":
        if adapt_tokenizer:
            raise ValueError("--adapt-tokenizer applies to MergeDNA (CARMANIA has no learned tokenizer)")
        stacks = ["layers"]
    else:
        stacks = ["latent_encoder.blocks"]
        if task_type == "per_base":
            stacks += ["latent_decoder.blocks", "local_decoder.blocks"]
        if adapt_tokenizer:
            stacks.append("local_encoder.blocks")
    scopes = "|".join(s.replace(".", r"\.") for s in stacks)
    attention = [t for t in targets if PROJECTIONS[t] == "attention"]
    mlp = [t for t in targets if PROJECTIONS[t] == "feed_forward"]
    parts = ([f"attention\\.({'|'.join(attention)})"] if attention else []) + \
            ([f"feed_forward\\.({'|'.join(mlp)})"] if mlp else [])
    pattern = f"({scopes})\\.\\d+\\.({'|'.join(parts)})"
    if adapt_tokenizer:
        pattern = f"({pattern}|local_encoder\\.mergers\\.\\d+\\.grouping)"
    return pattern


def apply_lora(model: nn.Module, pattern: str, rank: int, alpha: float) -> nn.Module:
    """Wrap `model` with LoRA adapters (every other backbone weight frozen); returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"--lora-rank {rank} must be >= 1")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none", target_modules=pattern)
    return get_peft_model(model, config)


def load_lora(model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)


def set_trainable(backbone: nn.Module, method: str) -> None:
    """full: every backbone weight trains; probe: none. LoRA leaves peft's choice (adapters only)."""
    if method == "lora":
        return
    for p in backbone.parameters():
        p.requires_grad_(method == "full")
