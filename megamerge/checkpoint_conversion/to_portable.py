"""DeepSpeed checkpoint (any ZeRO stage <= 2, any TP, PP and DP) -> portable safetensors directory.

The model family (MergeDNA or CARMANIA) and its config come from the checkpoint's client state.
Per model-parallel rank m = pp_rank * tp + tp_rank: the fp32 master weights are rebuilt from the
DP ranks' ZeRO partitions (zero_master.py) and renamed to the bare model's names
(parameter_names.py); the pipeline stages of one TP rank then hold disjoint parameters and are
united; the TP ranks are joined along the dimensions megamerge.parallel's split table gives
(tensor_parallel_join.py). The result must match a model of the checkpoint's family and
model_config name for name and shape.

Memory: the full fp32 model plus one model-parallel rank's partitions are held at once (a 7B
model needs ~60 GB of host RAM); the files are memory-mapped.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from megamerge.models.registry import ModelSpec, get_family
from megamerge.parallel.pipeline import check_pipeline_stages
from megamerge.parallel.tensor_parallel_plan import split_parameter_dims
from megamerge.portable import write_portable_state
from megamerge.training.checkpointing import WEIGHTS_ONLY_MARKER, checkpoint_family

from .discovery import CheckpointFiles, find_checkpoint
from .errors import ConversionError
from .parameter_names import meta_model, to_model_names
from .safe_load import load_deepspeed_file
from .staging import check_output_free, staging_dir
from .tensor_parallel_join import join_tensor_parallel
from .zero_master import merge_master_weights


def model_of(files: CheckpointFiles) -> tuple[ModelSpec, object]:
    """The family and config (MergeDNAConfig or CarmaniaConfig) the checkpoint was trained with."""
    try:
        family = get_family(checkpoint_family(files.client_state))
    except ValueError as e:
        raise ConversionError(f"{files.directory}: {e}") from None
    try:
        return family, family.config_class.from_dict(files.client_state["model_config"])
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{files.directory}: the stored {family.name} model_config is invalid "
                              f"({e})") from None


def master_weights(files: CheckpointFiles, family: ModelSpec, cfg, progress: bool = True
                   ) -> tuple[dict[str, torch.Tensor], dict]:
    """{bare model name: full fp32 tensor} and facts about the source optimizer."""
    model = meta_model(family, cfg)
    full_shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    try:
        check_pipeline_stages(cfg, files.pp)  # a checkpoint whose stages this model cannot have
    except ValueError as e:
        raise ConversionError(f"{files.directory}: {e}") from None
    per_tp: list[dict[str, torch.Tensor]] = [{} for _ in range(files.tp)]
    facts: dict = {}
    ranks = [(pp_rank, tp_rank) for pp_rank in range(files.pp) for tp_rank in range(files.tp)]
    for pp_rank, tp_rank in tqdm(ranks, desc="model-parallel ranks", disable=not progress):
        m = CheckpointFiles.mp_rank(pp_rank, tp_rank, files.tp)
        where = f"{files.directory.name} (TP rank {tp_rank}, PP stage {pp_rank})"
        model_states = load_deepspeed_file(files.model_states[m])
        param_shapes = model_states.get("param_shapes")
        if not param_shapes:
            raise ConversionError(f"{files.model_states[m]}: no param_shapes; not a ZeRO checkpoint")
        partitions = [files.optim_states[(m, d)] for d in range(files.zero_partitions)]
        weights, facts = merge_master_weights(param_shapes, partitions, where)
        weights = to_model_names(weights, model, pipeline=files.pp > 1, where=where)
        clash = set(weights) & set(per_tp[tp_rank])
        if clash:
            raise ConversionError(f"{where}: {sorted(clash)[:4]} also appear on another pipeline stage")
        per_tp[tp_rank].update(weights)
    full = join_tensor_parallel(per_tp, full_shapes, split_parameter_dims(model), files.directory.name)
    missing = sorted(set(full_shapes) - set(full))
    if missing:
        raise ConversionError(f"{files.directory}: no weights for "
                              f"{missing[:4]}{' ...' if len(missing) > 4 else ''} "
                              "of the checkpoint's model_config: the config does not match the tensors")
    wrong = [n for n in full if tuple(full[n].shape) != full_shapes[n]]
    if wrong:
        n = wrong[0]
        raise ConversionError(f"{files.directory}: {n} has shape {list(full[n].shape)} but the model_config "
                              f"gives {list(full_shapes[n])}: the config does not match the tensors")
    return full, facts


def convert_to_portable(load_dir: str | Path, out_dir: str | Path, tag: str | None = None,
                        dtype: torch.dtype = torch.float32, encoder_only: bool = False,
                        progress: bool = True) -> Path:
    check_output_free(Path(out_dir))
    files = find_checkpoint(load_dir, tag)
    family, cfg = model_of(files)
    if encoder_only and family.name != "mergedna":
        raise ConversionError(f"--encoder-only keeps MergeDNA's encoders; {files.directory} holds a "
                              f"{family.name} model")
    weights, facts = master_weights(files, family, cfg, progress)
    state = files.client_state
    ds_config = state.get("ds_config") or {}
    source = {
        "checkpoint": str(Path(load_dir).resolve()),
        "tag": files.tag,
        "layout": {"tp": files.tp, "pp": files.pp, "dp": files.dp, "sp": files.sp},
        "zero_stage": facts.get("zero_stage"),
        "optimizer": facts.get("optimizer"),
        "training_dtype": "bf16" if (ds_config.get("bf16") or {}).get("enabled") else "fp32",
        "deepspeed_version": state.get("ds_version"),
        "megamerge_version": state.get("megamerge_version"),
        "weights_only": bool(state.get("weights_only")) or (files.directory / WEIGHTS_ONLY_MARKER).is_file(),
    }
    extra = {
        "iteration": int(state.get("iteration", 0)),
        "consumed_samples": int(state.get("consumed_samples", 0)),
        "weights_from": ("fp32 master weights (ZeRO optimizer partitions), TP shards and pipeline stages "
                         "joined"),
        "source": source,
        "training_args": state.get("args"),
    }
    with staging_dir(out_dir) as tmp:
        write_portable_state(weights, family.name, cfg.to_dict(), tmp, extra=extra, dtype=dtype,
                             encoder_only=encoder_only)
    return Path(out_dir)
