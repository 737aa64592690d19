"""The model config the flags ask for, and the parallel-layout checks that need it.

Both run from the flags alone, before any process group exists: train.py (through the Trainer)
and slurm/preflight.py, which checks a job's flags before `sbatch` queues it."""

from __future__ import annotations

import dataclasses

from megamerge.models.common.config_options import declared_fields
from megamerge.models.registry import config_from_preset, family_of_preset
from megamerge.parallel import check_tensor_parallel_sizes
from megamerge.parallel.pipeline import check_pipeline_stages
from megamerge.parallel.process_groups import data_parallel_size
from megamerge.parallel.sequence_parallel import check_sequence_parallel_sizes
from megamerge.training.arguments import MODEL_DIM_FLAGS, config_flag_declarations, flag_of
from megamerge.training.ds_config import ConfigError


def method_flag_names(config_class) -> list[str]:
    """train.py's flags that set `config_class`'s declared fields (its method options and loss settings)."""
    return [flag_of(name) for name in declared_fields(config_class)]


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
            raise ConfigError(f"--{flag.replace('_', '-')} does not apply to {family.name} models "
                              f"({args.model})")
        overrides[field] = value
    own = declared_fields(family.config_class)
    for name, declarations in config_flag_declarations().items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if name not in own:
            models = " and ".join(model for model, _, _ in declarations)
            raise ConfigError(f"{flag_of(name)} applies to {models} models, not {family.name} ({args.model})")
        overrides[name] = tuple(value) if isinstance(value, list) else value
    try:
        cfg = config_from_preset(args.model, **overrides)
        cfg.validate()
    except ValueError as e:  # say which flags built the config, not only the rule it breaks
        given = [f"--{flag.replace('_', '-')} {getattr(args, flag)}" for flag in MODEL_DIM_FLAGS
                 if getattr(args, flag) is not None]
        given += [f"{flag_of(name)} {overrides[name]}" for name in own if name in overrides]
        raise ConfigError(f"{' '.join(given) or 'the preset'} (--model {args.model}): {e}") from None
    return cfg


def check_parallel_layout(args, cfg, world_size: int) -> None:
    """Everything that would otherwise hang or assert inside a process group, checked first."""
    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    sp = args.sequence_parallel_size
    try:
        check_pipeline_stages(cfg, pp)
        data_parallel_size(world_size, tp, pp, sp)
        check_tensor_parallel_sizes(cfg.n_heads, cfg.ffn_dim, tp, getattr(cfg, "n_kv_heads", None))
        check_sequence_parallel_sizes(cfg.n_heads, sp, getattr(cfg, "n_kv_heads", None))
    except ValueError as e:
        raise ConfigError(str(e)) from None
