"""Map DeepSpeed's parameter names back to the bare model's `state_dict()` names (MergeDNA or
CARMANIA).

* Without pipeline parallelism the engine wraps `PretrainingObjective(model)`: names carry a
  `model.` prefix.
* With it (MergeDNA only), the engine's module is a `PipelineModule` whose layers are registered as
  "0", "1", ... and each wrap one submodule of a full MergeDNA. The map is read off the family's
  one ordered list of pipeline layers (megamerge/models/mergedna/pipeline_layers.py, the list the
  PipelineModule is built from): "<layer>.<attribute>.<name>" -> "<submodule>.<name>".
"""

from __future__ import annotations

import torch
from torch import nn

from megamerge.models.registry import ModelSpec, family_of_model

from .errors import ConversionError

OBJECTIVE_PREFIX = "model."  # PretrainingObjective.model


def meta_model(family: ModelSpec, cfg) -> nn.Module:
    """The full (unsplit) model's structure and shapes without allocating its weights."""
    with torch.device("meta"):
        return family.model_class(cfg)


def pipeline_name_map(model: nn.Module) -> dict[str, str]:
    """{"<layer>.<attribute>.<name inside the submodule>": model parameter name} for a family with
    pipeline stages (`model` may be on meta)."""
    layers = family_of_model(model).pipeline_layers(model.cfg)
    out = {}
    for index, layer in enumerate(layers):
        for name, _ in model.get_submodule(layer.submodule).named_parameters():
            out[f"{index}.{layer.attribute}.{name}"] = f"{layer.submodule}.{name}"
    if sorted(out.values()) != sorted(name for name, _ in model.named_parameters()):
        raise RuntimeError("the pipeline layers do not cover every model parameter exactly once")
    return out


def to_model_names(weights: dict[str, torch.Tensor], model: nn.Module, pipeline: bool, where: str
                   ) -> dict[str, torch.Tensor]:
    """Rename one model-parallel rank's weights; `model` is the full model (meta) of the checkpoint."""
    if pipeline:
        names = pipeline_name_map(model)
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ConversionError(f"{where}: pipeline parameters {unknown[:4]} do not exist in a MergeDNA of "
                                  "the checkpoint's model_config: the config does not match the tensors")
        return {names[k]: v for k, v in weights.items()}
    unknown = sorted(k for k in weights if not k.startswith(OBJECTIVE_PREFIX))
    if unknown:
        raise ConversionError(f"{where}: parameters {unknown[:4]} are not under the training objective's "
                              f"{OBJECTIVE_PREFIX!r} module: not a megamerge checkpoint")
    return {k[len(OBJECTIVE_PREFIX):]: v for k, v in weights.items()}
