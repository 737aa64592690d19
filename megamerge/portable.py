"""The portable model format: a directory any machine can load without megamerge's training stack,
DeepSpeed, or pickle.

    PORTABLE_DIR/model.safetensors   the bare model's state_dict in fp32, keys = model.state_dict()
    PORTABLE_DIR/config.json         {"format", "format_version", "family", "model_config",
                                      "paper_deviations", "tokenizer", "megamerge_version", ...extra}

`paper_deviations` (written from model_config, informational: ignored on reading, absent in
directories written before it) lists the options in which the model departs from its family's
paper, e.g. ["rotary_merge=True"]; [] is the paper's method. A model_config without an option
field loads with megamerge's behaviour from before the option existed (MergeDNAConfig.from_dict).

`load_portable` is also exported as `megamerge.from_pretrained`.

Reading is strict, because a portable directory is often edited or assembled by hand: config.json
must be valid JSON whose top-level keys are the format's own or listed in its `extra_keys` (what
`extra=` added when it was written), so a misspelt key is an error instead of being ignored; and
the tensor shapes in the safetensors header are checked against the config on the meta device
before any weight or model memory is allocated, so a config that asks for sizes the weights do not
have fails in milliseconds instead of allocating what the config asks for.

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
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .models.registry import build_model, family_of_model, get_family
from .version import __version__
from .vocabulary import ALPHABET, MASK, PAD

FORMAT = "megamerge-portable"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
EXTRA_KEYS = "extra_keys"  # the top-level keys that `extra=` added, so a reader can tell them from typos
RESERVED = ("format", "format_version", "family", "model_config", "paper_deviations", "tokenizer",
            "megamerge_version", EXTRA_KEYS)
# What megamerge's own writers put in `extra` before `extra_keys` was recorded: still readable.
LEGACY_EXTRAS = ("encoder_only", "weights_dtype", "iteration", "consumed_samples", "weights_from", "source",
                 "training_args")
ENCODER_PARTS = ("local_encoder", "latent_encoder")  # what an encoder-only MergeDNA keeps


def save_portable(model: nn.Module, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Write `model` (a MergeDNA or Carmania, unwrapped) to out_dir; `extra` (JSON-serialisable,
    e.g. step and tokens seen) is stored alongside in config.json."""
    family = family_of_model(model)
    config = _config_json(family.name, model.cfg.to_dict(), dict(extra or {}))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Clone so tensors sharing storage (views, tied weights) are written as independent entries.
    state = {k: v.detach().to("cpu", torch.float32).contiguous().clone()
             for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": FORMAT, "family": family.name})
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
        "paper_deviations": get_family(family).config_class.from_dict(model_config).paper_deviations(),
        "tokenizer": {"alphabet": ALPHABET, "pad_id": PAD, "mask_id": MASK, "case": "insensitive"},
        "megamerge_version": __version__,
        EXTRA_KEYS: sorted(extra),
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


class PortableFormatError(ValueError):
    """A portable directory whose config.json or weights are not what the format says."""


def _parse_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PortableFormatError(f"{path}: not valid JSON ({e.msg}: line {e.lineno}, "
                                  f"column {e.colno})") from None
    except UnicodeDecodeError:
        raise PortableFormatError(f"{path}: not valid JSON (not UTF-8 text)") from None
    if not isinstance(config, dict):
        found = type(config).__name__
        raise PortableFormatError(f"{path}: expected a JSON object at the top level, found {found}")
    return config


def _check_top_level_keys(path: Path, config: dict) -> None:
    extras = config.get(EXTRA_KEYS, LEGACY_EXTRAS)
    if not isinstance(extras, (list, tuple)) or not all(isinstance(k, str) for k in extras):
        raise PortableFormatError(f"{path}: {EXTRA_KEYS!r} must be a list of key names, found {extras!r}")
    unknown = sorted(set(config) - set(RESERVED) - set(extras))
    if unknown:
        more = f" (and {unknown[1:]})" if unknown[1:] else ""
        raise PortableFormatError(f"{path}: unknown top-level key {unknown[0]!r}{more}; the format's keys "
                                  f"are {list(RESERVED)}, and extra metadata must be listed in "
                                  f"{EXTRA_KEYS!r} (save_portable's extra= does that): a misspelling?")


def read_portable_config(model_dir: str | Path) -> dict:
    """config.json, checked: valid JSON, no unknown top-level key, the entries a model needs."""
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a megamerge portable model directory")
    config = _parse_config(path)
    _check_top_level_keys(path, config)
    if config.get("format", FORMAT) != FORMAT:
        raise PortableFormatError(f"{path}: format {config['format']!r} is not {FORMAT!r}")
    for key, kind in (("family", str), ("model_config", dict)):
        if key not in config:
            raise PortableFormatError(f"{path} has no {key!r} entry")
        if not isinstance(config[key], kind):
            wanted = "string" if kind is str else "object"
            raise PortableFormatError(f"{path}: {key!r} must be a JSON {wanted}")
    version = config.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PortableFormatError(f"{path} has format_version {version!r}; this megamerge reads "
                                  f"<= {FORMAT_VERSION}, upgrade megamerge")
    return config


def read_portable_shapes(model_dir: str | Path) -> dict[str, tuple[int, ...]]:
    """{name: shape} from the safetensors header alone: nothing but the header is read."""
    weights = Path(model_dir) / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # noqa: BLE001 - safetensors' SafetensorError: bad header or short file
        raise PortableFormatError(f"{weights} is truncated or corrupt ({e})") from None


def check_portable_shapes(model_dir: str | Path, config: dict) -> None:
    """Refuse weights whose names or shapes differ from what config.json describes, comparing the
    safetensors header with the model built on the meta device: no memory is allocated for either,
    however large the config's sizes."""
    path, weights = Path(model_dir) / CONFIG, Path(model_dir) / WEIGHTS
    family = config["family"]
    try:
        with torch.device("meta"):
            skeleton = build_model(family, config["model_config"])
    except (TypeError, ValueError) as e:
        raise PortableFormatError(f"{path}: invalid {family} model_config ({e})") from None
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    stored = read_portable_shapes(model_dir)
    missing = sorted(set(expected) - set(stored))
    if config.get("encoder_only"):
        missing = [k for k in missing if k.split(".", 1)[0] in ENCODER_PARTS]
    unexpected = sorted(set(stored) - set(expected))
    wrong = [n for n in expected if n in stored and stored[n] != expected[n]]
    mismatch = f"{weights} does not match the {family} config in {path}"
    if missing or unexpected:
        raise PortableFormatError(f"{mismatch}: missing {len(missing)} tensors {missing[:3]}, "
                                  f"{len(unexpected)} unexpected {unexpected[:3]}")
    if wrong:
        more = f" ({len(wrong) - 1} more tensors differ)" if len(wrong) > 1 else ""
        raise PortableFormatError(f"{mismatch}: {wrong[0]} is {list(stored[wrong[0]])}, the config gives "
                                  f"{list(expected[wrong[0]])}{more}")


def read_portable_weights(model_dir: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of model.safetensors (CPU, stored dtype); a damaged file is a ValueError."""
    weights = Path(model_dir) / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    try:
        return load_file(str(weights), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors' SafetensorError: bad header or short file
        raise PortableFormatError(f"{weights} is truncated or corrupt ({e})") from None


def load_portable(model_dir: str | Path, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> nn.Module:
    """Rebuild the model saved in model_dir, in eval mode, on `device` in `dtype`."""
    config = read_portable_config(model_dir)
    check_portable_shapes(model_dir, config)  # before anything the config's sizes would allocate
    model = build_model(config["family"], config["model_config"])
    state = read_portable_weights(model_dir)
    # Names and shapes were checked above; an encoder-only directory lacks the decoders by design.
    model.load_state_dict(state, strict=not config.get("encoder_only"))
    if config.get("encoder_only"):
        for part in ("latent_decoder", "local_decoder"):
            setattr(model, part, EncoderOnlyRemoved(part))
    return model.to(device=device, dtype=dtype).eval()
