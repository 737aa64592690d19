"""The model config the flags ask for, and the parallel-layout checks that need it.

Both run from the flags alone, before any process group exists: train.py (through the Trainer)
and slurm/preflight.py, which checks a job's flags before `sbatch` queues it."""

from __future__ import annotations

import dataclasses

from megamerge.models.registry import config_from_preset, family_of_preset
from megamerge.parallel import check_tensor_parallel_sizes
from megamerge.parallel.pipeline import check_pipeline_stages
from megamerge.parallel.process_groups import data_parallel_size
from megamerge.training.arguments import MODEL_DIM_FLAGS
from megamerge.training.ds_config import ConfigError

# train.py's flags that select MergeDNA's method options -> (config field, flag value -> field value).
# Each defaults to None: the preset's value, so a preset is never overridden by a flag left unset.
MERGEDNA_METHOD_FLAGS = {
    "merge_rule": ("rotary_merge", lambda value: value == "rotary"),
    "merge_selection": ("merge_selection", str),
    "amtm_normalization": ("amtm_normalization", str),
    "latent_attention": ("size_proportional_attention", lambda value: value == "size_proportional"),
    "latent_merge_schedule": ("latent_merge_schedule", str),
    "latent_mtr_weight": ("latent_mtr_weight", float),
    "compression_range": ("compression_range", tuple),
}


def method_flag_names() -> list[str]:
    return [f"--{flag.replace('_', '-')}" for flag in MERGEDNA_METHOD_FLAGS]


def model_config(args):
    """The preset's config (either family) with the flags that apply to it."""
    family = family_of_preset(args.model)
    fields = {f.name for f in dataclasses.fields(family.config_class)}
    overrides = {}
    for flag, field in MODEL_DIM_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if field not in fields:
            raise ConfigError(f"--{flag.replace('_', '-')} does not apply to {family.name} models ({args.model})")
        overrides[field] = value
    for flag, (field, to_field) in MERGEDNA_METHOD_FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if family.name != "mergedna":
            raise ConfigError(f"--{flag.replace('_', '-')} applies to MergeDNA models, not {family.name} "
                              f"({args.model})")
        overrides[field] = to_field(value)
    if args.tm_weight is not None:
        overrides["tm_weight"] = args.tm_weight
    try:
        cfg = config_from_preset(args.model, **overrides)
        cfg.validate()
    except ValueError as e:  # say which flags built the config, not only the rule it breaks
        given = [f"--{flag.replace('_', '-')} {getattr(args, flag)}" for flag in MODEL_DIM_FLAGS
                 if getattr(args, flag) is not None]
        raise ConfigError(f"{' '.join(given) or 'the preset'} (--model {args.model}): {e}") from None
    return cfg


def check_parallel_layout(args, cfg, world_size: int) -> None:
    """Everything that would otherwise hang or assert inside a process group, checked first."""
    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    try:
        check_pipeline_stages(cfg, pp)
        data_parallel_size(world_size, tp, pp)
        check_tensor_parallel_sizes(cfg.n_heads, cfg.ffn_dim, tp, getattr(cfg, "n_kv_heads", None))
    except ValueError as e:
        raise ConfigError(str(e)) from None
