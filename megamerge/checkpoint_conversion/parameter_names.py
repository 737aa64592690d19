"""Map DeepSpeed's parameter names back to the bare model's `state_dict()` names (MergeDNA or
CARMANIA).

* Without pipeline parallelism the engine wraps `PretrainingObjective(model)`: names carry a
  `model.` prefix.
* With it (MergeDNA only), the engine's module is a `PipelineModule` whose layers are registered as "0", "1", ...
  and wrap submodules of one full MergeDNA (megamerge/parallel/pipeline.py). The map is derived by
  building those layer modules around a MergeDNA on the meta device (no memory) and matching
  parameters by identity, so it follows whatever the layer classes wrap.
"""

from __future__ import annotations

import torch
from torch import nn

from megamerge.models import MergeDNA
from megamerge.models.registry import ModelFamily
from megamerge.parallel.pipeline import (
    LatentDecoderBlockPipe,
    LatentEncoderBlockPipe,
    LatentEncoderNormPipe,
    LocalDecoderPipe,
    LocalEncoderPipe,
    pipeline_layer_count,
)

from .errors import ConversionError

OBJECTIVE_PREFIX = "model."  # PretrainingObjective.model


def meta_model(family: ModelFamily, cfg) -> nn.Module:
    """The full (unsplit) model's structure and shapes without allocating its weights."""
    with torch.device("meta"):
        return family.model_class(cfg)


def pipeline_layers(model: MergeDNA) -> list[nn.Module]:
    # The order of MergeDNAPipeline.__init__'s LayerSpecs (megamerge/parallel/pipeline.py).
    cfg = model.cfg
    layers: list[nn.Module] = [LocalEncoderPipe(model)]
    layers += [LatentEncoderBlockPipe(model, i) for i in range(cfg.latent_encoder_layers)]
    layers += [LatentEncoderNormPipe(model)]
    layers += [LatentDecoderBlockPipe(model, j) for j in range(cfg.latent_decoder_layers)]
    layers += [LocalDecoderPipe(model)]
    if len(layers) != pipeline_layer_count(cfg):
        raise RuntimeError("pipeline_layers is out of date with megamerge/parallel/pipeline.py")
    return layers


def pipeline_name_map(model: MergeDNA) -> dict[str, str]:
    """{"<layer>.<name inside the layer>": MergeDNA parameter name} (`model` may be on meta)."""
    by_identity = {id(p): name for name, p in model.named_parameters()}
    out = {}
    for index, layer in enumerate(pipeline_layers(model)):
        for local, p in layer.named_parameters():
            out[f"{index}.{local}"] = by_identity[id(p)]
    if sorted(out.values()) != sorted(by_identity.values()):
        raise RuntimeError("the pipeline layers do not cover every MergeDNA parameter exactly once")
    return out


def to_model_names(weights: dict[str, torch.Tensor], model: nn.Module, pipeline: bool, where: str
                   ) -> dict[str, torch.Tensor]:
    """Rename one model-parallel rank's weights; `model` is the full model (meta) of the checkpoint."""
    if pipeline:
        names = pipeline_name_map(model)
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ConversionError(f"{where}: pipeline parameters {unknown[:4]} do not exist in a MergeDNA of the "
                                  "checkpoint's model_config: the config does not match the tensors")
        return {names[k]: v for k, v in weights.items()}
    unknown = sorted(k for k in weights if not k.startswith(OBJECTIVE_PREFIX))
    if unknown:
        raise ConversionError(f"{where}: parameters {unknown[:4]} are not under the training objective's "
                              f"{OBJECTIVE_PREFIX!r} module: not a megamerge checkpoint")
    return {k[len(OBJECTIVE_PREFIX):]: v for k, v in weights.items()}
