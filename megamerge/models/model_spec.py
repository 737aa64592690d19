"""`ModelSpec`: everything the rest of megamerge needs to know about one model family, in one
frozen record. Each family defines its spec beside its model (`mergedna/spec.py`,
`carmania/spec.py`); `registry.py` collects them. The trainer, the checkpoint converter, tensor
parallelism, the pipeline and the memory estimator read a family only through its spec."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the family name stored in checkpoints and config.json
    config_class: type  # has from_preset(name, **overrides), from_dict(d) and to_dict()
    model_class: type  # model_class(config) builds the model; compute_losses(input_ids, seeds) -> dict
    presets: dict  # preset name -> config

    # What training logs and how evaluation scores it (keys of compute_losses' dict).
    loss_keys: tuple[str, ...]  # scalar losses, averaged and logged
    ratio_keys: tuple[str, ...]  # scalar ratios averaged and logged (MergeDNA's compression)
    eval_correct: str  # correct predictions among the scored bases
    eval_count: str  # number of scored bases
    eval_loss: str  # the cross-entropy over those bases, for perplexity
    eval_accuracy_name: str  # how the eval line names the accuracy
    flops_per_sequence: Callable[[object, int, dict], float]  # (cfg, n bases, logged means) -> FLOPs

    # The blocks of an unwrapped model that tensor parallelism splits (megamerge/parallel).
    tensor_parallel_blocks: Callable[[nn.Module], list]
    # cfg -> the ordered pipeline layers (mergedna/pipeline_layers.py); None: no pipeline stages.
    pipeline_layers: Callable[[object], list] | None = None
    # (model, parallel state) -> the family's parallel.pipeline.PipelineDriver over this rank's stage
    # (mergedna/pipeline.py); None with pipeline_layers.
    pipeline: Callable[[nn.Module, object], object] | None = None
    # The family's paper recipe for train.py's optimiser flags (argument dest -> value); a flag given
    # on the command line wins (training/arguments.py).
    training_defaults: dict | None = None
    # model -> {metrics.jsonl key: parameters} whose gradient norms the trainer logs
    # (training/grad_norms.py); None: the family logs none (CARMANIA has no learned tokenizer).
    grad_norm_groups: Callable[[nn.Module], dict[str, list[nn.Parameter]]] | None = None
