"""Portable directory -> a weights-only DeepSpeed checkpoint at a chosen TP x PP layout.

The checkpoint is written by the real engine, built by training's own `build_engine`: one process
per model-parallel rank (TP x PP, data parallel 1) is spawned on the CPU (gloo); each builds the
full model of the portable family (MergeDNA or CARMANIA), loads the portable weights into it, lets
`apply_tensor_parallel` cut its shards from them (megamerge.parallel's split table) and hands it to
`build_engine` (which, for PP > 1, wraps it in `MergeDNAPipeline`); then `checkpointing.save` writes the files
with the engine's own `save_checkpoint`. The file names, parameter names and shard shapes are
therefore whatever DeepSpeed and megamerge.parallel produce at that layout, not a re-implementation.

The optimizer is fresh (Adam moments zero, fp32 master = the weights). client_state says
`"weights_only": true` and the tag directory holds a `megamerge_weights_only` marker: the
checkpoint must be loaded with `train.py --load DIR --finetune` (weights only, fresh optimizer
and data stream), which works at any data-parallel size.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from megamerge import __version__
from megamerge.free_port import free_port
from megamerge.models.registry import ModelSpec, get_family
from megamerge.parallel.pipeline import check_pipeline_stages
from megamerge.parallel.tensor_parallel import TensorParallelSizeError, check_tensor_parallel_sizes
from megamerge.portable import check_portable_shapes, read_portable_config, read_portable_weights
from megamerge.training.checkpointing import WEIGHTS_ONLY_MARKER

from .errors import ConversionError
from .parameter_names import meta_model
from .staging import check_output_free, staging_dir


def read_checked_portable(portable_dir: Path) -> tuple[dict, ModelSpec, object, dict[str, torch.Tensor]]:
    """The portable config, model family, model config and weights, checked against each other:
    names and shapes from the safetensors header against the model on the meta device, before any
    tensor is read or allocated."""
    try:
        config = read_portable_config(portable_dir)
        family = get_family(config["family"])
    except (FileNotFoundError, ValueError) as e:
        raise ConversionError(str(e)) from None
    if config.get("encoder_only"):
        raise ConversionError(f"{portable_dir} was converted with --encoder-only: it has no decoders to "
                              "train; convert the original checkpoint without --encoder-only")
    try:
        cfg = family.config_class.from_dict(config["model_config"])
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{portable_dir}/config.json: invalid {family.name} model_config "
                              f"({e})") from None
    try:
        check_portable_shapes(portable_dir, config)
        state = read_portable_weights(portable_dir)
    except (FileNotFoundError, ValueError) as e:
        raise ConversionError(str(e)) from None
    return config, family, cfg, state


def _engine_config(zero_stage: int) -> dict:
    # Only the layout matters: the optimizer state written here is fresh and --finetune ignores it.
    return {
        "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "train_batch_size": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 0.0, "torch_adam": True}},
        "zero_optimization": {"stage": zero_stage},
        "steps_per_print": 10**9,
    }


def _write_rank(rank: int, world: int, port: int, tp: int, pp: int, zero_stage: int, portable_dir: str,
                out_dir: str, client_state: dict) -> None:
    """One model-parallel rank (spawned): the engine is built by the function training uses."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from megamerge.parallel import apply_tensor_parallel, initialize_model_parallel
    from megamerge.training import checkpointing
    from megamerge.training.distributed import init_distributed
    from megamerge.training.engine import build_engine

    init_distributed()
    parallel = initialize_model_parallel(tp, pp)
    family = get_family(client_state["family"])
    cfg = family.config_class.from_dict(client_state["model_config"])
    # Built on meta (no random init): every weight comes from the portable file.
    model = meta_model(family, cfg).to_empty(device="cpu")
    model.load_state_dict(read_portable_weights(portable_dir), strict=True)
    apply_tensor_parallel(model, parallel.tp_group)
    engine = build_engine(model, parallel, _engine_config(zero_stage), torch.device("cpu")).engine
    rank_state = {"data": None, "rng": checkpointing.rng_state()}
    tag = checkpointing.save(engine, out_dir, client_state["iteration"], client_state, rank_state)
    if dist.get_rank() == 0:
        (Path(out_dir) / tag / WEIGHTS_ONLY_MARKER).write_text(
            "weights only (from a portable model): load with train.py --load DIR --finetune\n")
    dist.barrier()
    dist.destroy_process_group()


def convert_from_portable(portable_dir: str | Path, out_dir: str | Path, tp: int = 1, pp: int = 1,
                          zero_stage: int | None = None) -> Path:
    portable_dir, out_dir = Path(portable_dir), Path(out_dir)
    check_output_free(out_dir)
    if tp < 1 or pp < 1:
        raise ConversionError(f"--tp {tp} and --pp {pp} must be >= 1")
    config, family, cfg, _ = read_checked_portable(portable_dir)
    try:
        check_pipeline_stages(cfg, pp)
        check_tensor_parallel_sizes(cfg.n_heads, cfg.ffn_dim, tp, getattr(cfg, "n_kv_heads", None))
    except (TensorParallelSizeError, ValueError) as e:
        raise ConversionError(f"{portable_dir}: {e}") from None
    if zero_stage is None:
        zero_stage = 1 if pp > 1 else 2  # DeepSpeed's pipeline engine refuses ZeRO-2
    if zero_stage not in (1, 2) or (pp > 1 and zero_stage != 1):
        raise ConversionError(f"--zero-stage {zero_stage}: use 1 or 2 (1 with --pp > 1)")
    iteration = int(config.get("iteration", 0))
    client_state = {
        "iteration": iteration, "consumed_samples": int(config.get("consumed_samples", 0)),
        "skipped_iters": 0,
        "family": family.name, "model_config": cfg.to_dict(), "args": config.get("training_args") or {},
        "megamerge_version": __version__, "layout": {"tp": tp, "pp": pp, "dp": 1},
        "weights_only": True, "source_portable": str(portable_dir.resolve()),
    }
    import torch.multiprocessing as mp

    world = tp * pp
    with staging_dir(out_dir) as tmp:
        try:
            mp.spawn(_write_rank, args=(world, free_port(), tp, pp, zero_stage, str(portable_dir), str(tmp),
                                        client_state), nprocs=world, join=True)
        except mp.ProcessRaisedException as e:
            last = [line for line in str(e).strip().splitlines() if line.strip()][-1]
            raise ConversionError(f"writing the TP={tp} PP={pp} checkpoint failed: {last}") from None
        except mp.ProcessExitedException as e:
            raise ConversionError(f"writing the TP={tp} PP={pp} checkpoint failed: {e}") from None
    return out_dir
