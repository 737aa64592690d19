"""MergeDNA's registry entry: config, model, presets, what training logs, FLOPs, the blocks
tensor parallelism splits (every Latent Encoder and Latent Decoder block; the local encoder and
decoder, whose windows are short and whose merges are local, stay replicated), the pipeline
layers and the parameter groups whose gradient norms training logs."""

from __future__ import annotations

from megamerge.models.mergedna.config import PRESETS, TRAINING_DEFAULTS, MergeDNAConfig
from megamerge.models.mergedna.flops import training_flops_per_sequence
from megamerge.models.mergedna.model import MergeDNA
from megamerge.models.mergedna.pipeline_layers import pipeline_layers
from megamerge.models.model_spec import ModelSpec


def _tensor_parallel_blocks(model: MergeDNA) -> list:
    return [*model.latent_encoder.blocks, *model.latent_decoder.blocks]


def _grad_norm_groups(model: MergeDNA) -> dict[str, list]:
    """The learned tokenizer's parameters: every Local Encoder TokenMerger's grouping projection
    (`local_encoder.mergers.*.grouping.weight`, whose cosine scores pick the merges and which learns
    only through the straight-through gate) and the whole Local Encoder around them."""
    return {"merge_grad_norm": [merger.grouping.weight for merger in model.local_encoder.mergers],
            "local_encoder_grad_norm": list(model.local_encoder.parameters())}


def _pipeline(model: MergeDNA, parallel):
    from megamerge.models.mergedna.pipeline import MergeDNAPipeline  # late: it imports the registry

    return MergeDNAPipeline(model, parallel)


MERGEDNA_SPEC = ModelSpec(
    name="mergedna", config_class=MergeDNAConfig, model_class=MergeDNA, presets=PRESETS,
    loss_keys=("loss", "mtr", "latent_mtr", "amtm"),
    ratio_keys=("bases_per_token", "latent_bases_per_token"),
    eval_correct="masked_correct", eval_count="masked_count", eval_loss="amtm_per_base",
    eval_accuracy_name="masked_base_accuracy",
    flops_per_sequence=training_flops_per_sequence,
    tensor_parallel_blocks=_tensor_parallel_blocks,
    training_defaults=TRAINING_DEFAULTS,
    pipeline_layers=pipeline_layers,
    pipeline=_pipeline,
    grad_norm_groups=_grad_norm_groups,
)
