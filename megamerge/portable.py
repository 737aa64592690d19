"""The portable model format: a directory any machine can load without megamerge's training stack,
DeepSpeed, or pickle.

    PORTABLE_DIR/model.safetensors   the bare model's state_dict in fp32, keys = model.state_dict()
    PORTABLE_DIR/config.json         {"format", "format_version", "family", "model_config",
                                      "tokenizer", "megamerge_version", ...extra}

`load_portable` is also exported as `megamerge.from_pretrained`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .model.registry import build_model, family_of_model
from .tokenizer import ALPHABET, MASK, PAD

FORMAT = "megamerge-portable"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
RESERVED = ("format", "format_version", "family", "model_config", "tokenizer", "megamerge_version")


def save_portable(model: nn.Module, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Write `model` (a MergeDNA or Carmania, unwrapped) to out_dir; `extra` (JSON-serialisable,
    e.g. step and tokens seen) is stored alongside in config.json."""
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(RESERVED))
    if clash:
        raise ValueError(f"extra keys {clash} are reserved by the portable format")
    family = family_of_model(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Clone so tensors sharing storage (views, tied weights) are written as independent entries.
    state = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": FORMAT, "family": family.name})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": family.name,
        "model_config": model.cfg.to_dict(),
        "tokenizer": {"alphabet": ALPHABET, "pad_id": PAD, "mask_id": MASK, "case": "insensitive"},
        "megamerge_version": __version__,
        **extra,
    }
    (out / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    return out


def read_portable_config(model_dir: str | Path) -> dict:
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a megamerge portable model directory")
    config = json.loads(path.read_text())
    for key in ("family", "model_config"):
        if key not in config:
            raise ValueError(f"{path} has no {key!r} entry")
    if config.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {config['format_version']}; this megamerge reads "
                         f"<= {FORMAT_VERSION}, upgrade megamerge")
    return config


def load_portable(model_dir: str | Path, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> nn.Module:
    """Rebuild the model saved in model_dir, in eval mode, on `device` in `dtype`."""
    config = read_portable_config(model_dir)
    weights = Path(model_dir) / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    model = build_model(config["family"], config["model_config"])
    state = load_file(str(weights), device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights} does not match the {config['family']} config: "
                         f"missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
    return model.to(device=device, dtype=dtype).eval()
