"""The portable model format: a directory any machine can load without megamerge's training stack,
DeepSpeed, or pickle.

    PORTABLE_DIR/model.safetensors   the bare model's state_dict in fp32, keys = model.state_dict()
    PORTABLE_DIR/config.json         {"format", "format_version", "family", "model_config",
                                      "tokenizer", "megamerge_version", ...extra}

`load_portable` is also exported as `megamerge.from_pretrained`.

Converted checkpoints (tools/convert_checkpoint.py) go through `write_portable_state`: the same
two files, written from a state dict without building the model; `--dtype bf16` stores bf16
tensors (loaded back into the requested dtype), and `encoder_only: true` in config.json marks a
directory holding only the Local and Latent Encoders (MergeDNA's `encode` works, the decoders
raise).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .models.registry import build_model, family_of_model
from .vocabulary import ALPHABET, MASK, PAD

FORMAT = "megamerge-portable"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
RESERVED = ("format", "format_version", "family", "model_config", "tokenizer", "megamerge_version")
ENCODER_PARTS = ("local_encoder", "latent_encoder")  # what an encoder-only MergeDNA keeps


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


def _config_json(family: str, model_config: dict, extra: dict) -> dict:
    clash = sorted(set(extra) & set(RESERVED))
    if clash:
        raise ValueError(f"extra keys {clash} are reserved by the portable format")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": family,
        "model_config": model_config,
        "tokenizer": {"alphabet": ALPHABET, "pad_id": PAD, "mask_id": MASK, "case": "insensitive"},
        "megamerge_version": __version__,
        **extra,
    }


def encoder_only_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.split(".", 1)[0] in ENCODER_PARTS}


def write_portable_state(state: dict[str, torch.Tensor], family: str, model_config: dict, out_dir: str | Path,
                         extra: dict | None = None, dtype: torch.dtype = torch.float32,
                         encoder_only: bool = False) -> Path:
    """Write a full state dict (keys = the bare model's state_dict()) as a portable directory.
    The caller checks the tensors against the config (tools/convert_checkpoint.py does)."""
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"portable weights are stored in float32 or bfloat16, not {dtype}")
    extra = dict(extra or {})
    if encoder_only:
        if family != "mergedna":
            raise ValueError("encoder_only applies to MergeDNA models")
        state = encoder_only_state(state)
    extra.update(encoder_only=encoder_only, weights_dtype=str(dtype).removeprefix("torch."))
    config = _config_json(family, model_config, extra)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype).contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(out / WEIGHTS), metadata={"format": FORMAT, "family": family})
    (out / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    return out


class EncoderOnlyRemoved(nn.Module):
    """Stands in for a decoder that an encoder-only conversion left out."""

    def __init__(self, part: str):
        super().__init__()
        self.part = part

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"this model was converted with --encoder-only: its {self.part} was not kept; use "
                           "model.encode(...) or convert again without --encoder-only")


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


def read_portable_weights(model_dir: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of model.safetensors (CPU, stored dtype); a damaged file is a ValueError."""
    weights = Path(model_dir) / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    try:
        return load_file(str(weights), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors' SafetensorError: bad header or short file
        raise ValueError(f"{weights} is truncated or corrupt ({e})") from None


def load_portable(model_dir: str | Path, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> nn.Module:
    """Rebuild the model saved in model_dir, in eval mode, on `device` in `dtype`."""
    config = read_portable_config(model_dir)
    weights = Path(model_dir) / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    model = build_model(config["family"], config["model_config"])
    state = read_portable_weights(model_dir)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{weights} does not match the {config['family']} config in {CONFIG}: "
                         f"{str(e).splitlines()[-1].strip()}") from None
    if config.get("encoder_only"):
        missing = [k for k in missing if k.split(".", 1)[0] in ENCODER_PARTS]
        for part in ("latent_decoder", "local_decoder"):
            setattr(model, part, EncoderOnlyRemoved(part))
    if missing or unexpected:
        raise ValueError(f"{weights} does not match the {config['family']} config: "
                         f"missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
    return model.to(device=device, dtype=dtype).eval()
