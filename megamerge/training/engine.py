"""The DeepSpeed engine around a (tensor-parallel) model: one construction for training and for
the portable -> DeepSpeed converter, so a converted checkpoint has exactly the parameter names
and shard layout that training writes and loads.

Without pipeline stages the engine wraps `PretrainingObjective(model)`; with them it wraps the
stage's `PipelineModule`, which the family's pipeline driver (its spec's `pipeline`) builds and
drives. This is the one place that decides which: afterwards only `Trainer.train_step` tells the
two apart (evaluation gets its forward pass from `eval_forward`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from megamerge.models.common.batch import Batch
from megamerge.models.registry import family_of_model
from megamerge.parallel import ModelParallelUnit
from megamerge.parallel.pipeline import PipelineDriver
from megamerge.training.objective import PretrainingObjective


@dataclass(frozen=True)
class BuiltEngine:
    engine: object  # deepspeed's DeepSpeedEngine, or its PipelineEngine with pipeline stages
    pipeline: PipelineDriver | None  # None: no pipeline stages (PP = 1)
    # a Batch -> the loss dict of compute_losses, for evaluation (no gradient)
    eval_forward: Callable[[Batch], dict]


def build_engine(model: nn.Module, parallel, ds_config: dict, device: torch.device) -> BuiltEngine:
    """`deepspeed.initialize` on `model` (already split by apply_tensor_parallel) at `parallel`'s
    layout. With pipeline stages, `ds_config` gains the pipeline settings TP needs."""
    import deepspeed

    if parallel.pp == 1:
        engine, _, _, _ = deepspeed.initialize(model=PretrainingObjective(model).to(device),
                                               model_parameters=model.parameters(), config=ds_config,
                                               mpu=ModelParallelUnit(parallel))
        return BuiltEngine(engine, None, engine)
    # TP shards travel whole between stages (no pipe/grad partitioning over the TP group).
    ds_config.setdefault("pipeline", {}).update(pipe_partitioned=False, grad_partitioned=False)
    # the engine moves only this stage's layers to the device
    pipeline = family_of_model(model).pipeline(model, parallel)
    engine, _, _, _ = deepspeed.initialize(model=pipeline.module, config=ds_config,
                                           model_parameters=list(pipeline.module.parameters()))

    def eval_forward(batch: Batch) -> dict:
        return dict(zip(pipeline.output_keys, pipeline.eval_step(engine, batch)))

    return BuiltEngine(engine, pipeline, eval_forward)
