"""MergeDNA's one list of pipeline layers (megamerge/models/mergedna/pipeline_layers.py) and what
derives from it: the pipeline's layer modules, the converter's parameter names, the layer count
and the merge layer. Built on the meta device, without processes."""

from __future__ import annotations

import pytest
import torch

from megamerge.checkpoint_conversion.parameter_names import pipeline_name_map
from megamerge.models import MergeDNA, MergeDNAConfig
from megamerge.models.mergedna.pipeline import PIPE_CLASSES
from megamerge.models.mergedna.pipeline_layers import (
    LATENT_ENCODER_BLOCK,
    LATENT_ENCODER_NORM,
    latent_merge_layer_indices,
    pipeline_layers,
)
from megamerge.parallel.pipeline import pipeline_layer_count


def _meta_model(**overrides) -> MergeDNA:
    with torch.device("meta"):
        return MergeDNA(MergeDNAConfig.from_preset("tiny", **overrides))


@pytest.mark.parametrize("merge_layer", [0, 2, 4])
def test_pipeline_modules_hold_exactly_the_parameters_the_converter_names(merge_layer):
    model = _meta_model(latent_merge_schedule="single_layer", latent_merge_layer=merge_layer)
    names = pipeline_name_map(model)
    by_identity = {id(p): name for name, p in model.named_parameters()}
    seen = {}
    for index, layer in enumerate(pipeline_layers(model.cfg)):
        module = PIPE_CLASSES[layer.kind](model, layer)  # what DeepSpeed's LayerSpec builds
        for local, p in module.named_parameters():
            seen[f"{index}.{local}"] = by_identity[id(p)]
    assert seen == names
    assert sorted(names.values()) == sorted(by_identity.values())  # every parameter, exactly once


def test_layer_count_and_merge_layer_follow_the_list():
    cfg = MergeDNAConfig.from_preset("tiny")
    layers = pipeline_layers(cfg)
    assert (pipeline_layer_count(cfg) == len(layers)
            == cfg.latent_encoder_layers + cfg.latent_decoder_layers + 3)
    for merge_layer in range(cfg.latent_encoder_layers + 1):
        cfg_m = MergeDNAConfig.from_preset("tiny", latent_merge_schedule="single_layer",
                                           latent_merge_layer=merge_layer)
        (index,) = latent_merge_layer_indices(cfg_m)
        merging = pipeline_layers(cfg_m)[index]
        if merge_layer < cfg.latent_encoder_layers:
            assert (merging.kind, merging.index) == (LATENT_ENCODER_BLOCK, merge_layer)
        else:  # after the last block: the norm layer merges
            assert merging.kind == LATENT_ENCODER_NORM
    # per_block (the paper's): after every block, so before blocks 1.. and at the norm
    merging = [layers[i] for i in latent_merge_layer_indices(cfg)]
    assert [(m.kind, m.index) for m in merging] == [
        *((LATENT_ENCODER_BLOCK, i) for i in range(1, cfg.latent_encoder_layers)),
        (LATENT_ENCODER_NORM, None)]
