"""The one ordered list of MergeDNA's pipeline layers. Everything that depends on the layer
order derives from it: the DeepSpeed `PipelineModule` (megamerge/models/mergedna/pipeline.py), the
checkpoint converter's parameter names, the layer count checked against `--pipeline-model-
parallel-size`, and the memory estimator's per-layer parameters.

    local encoder | latent-encoder block x n_enc | latent-encoder norm |
    latent-decoder block x n_dec | local decoder (and head, and the losses)

Each layer wraps one submodule of a full MergeDNA; DeepSpeed names its parameters
"<layer index>.<attribute>.<name inside the submodule>".
"""

from __future__ import annotations

from dataclasses import dataclass

from megamerge.models.mergedna.config import MergeDNAConfig

# Layer kinds (the memory estimator's activation sites name their pipeline layer by these values).
LOCAL_ENCODER = "local_encoder"
LATENT_ENCODER_BLOCK = "latent_encoder"
LATENT_ENCODER_NORM = "latent_norm"
LATENT_DECODER_BLOCK = "latent_decoder"
LOCAL_DECODER = "local_decoder"


@dataclass(frozen=True)
class PipelineLayer:
    kind: str  # one of the five constants above
    index: int | None  # the block's index inside its stack (block kinds only)
    submodule: str  # path of the wrapped submodule inside MergeDNA ("latent_encoder.blocks.3")
    attribute: str  # the name the pipeline layer holds it under (in DeepSpeed's parameter names)


def pipeline_layers(cfg: MergeDNAConfig) -> list[PipelineLayer]:
    layers = [PipelineLayer(LOCAL_ENCODER, None, "local_encoder", "local_encoder")]
    layers += [PipelineLayer(LATENT_ENCODER_BLOCK, i, f"latent_encoder.blocks.{i}", "block")
               for i in range(cfg.latent_encoder_layers)]
    layers += [PipelineLayer(LATENT_ENCODER_NORM, None, "latent_encoder.norm", "norm")]
    layers += [PipelineLayer(LATENT_DECODER_BLOCK, j, f"latent_decoder.blocks.{j}", "block")
               for j in range(cfg.latent_decoder_layers)]
    layers += [PipelineLayer(LOCAL_DECODER, None, "local_decoder", "local_decoder")]
    return layers


def latent_merge_layer_indices(cfg: MergeDNAConfig) -> tuple[int, ...]:
    """The pipeline layers at whose start pass 2 merges, one per cfg.latent_merge_points, in order:
    latent-encoder block p, or the latent norm for the merge after the last block."""
    positions = {}
    for position, layer in enumerate(pipeline_layers(cfg)):
        if layer.kind == LATENT_ENCODER_BLOCK:
            positions[layer.index] = position
        elif layer.kind == LATENT_ENCODER_NORM:
            positions[cfg.latent_encoder_layers] = position
    return tuple(positions[point] for point in cfg.latent_merge_points)
