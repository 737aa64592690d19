"""CARMANIA's registry entry: config, model, presets, what training logs, FLOPs, and the blocks
tensor parallelism splits (every layer; embedding, final norm and the 4-way head stay
replicated). CARMANIA has no pipeline stages."""

from __future__ import annotations

from megamerge.models.carmania.config import CARMANIA_PRESETS, TRAINING_DEFAULTS, CarmaniaConfig
from megamerge.models.carmania.flops import training_flops_per_sequence
from megamerge.models.carmania.model import Carmania
from megamerge.models.model_spec import ModelSpec


def _flops_per_sequence(cfg: CarmaniaConfig, n: int, means: dict) -> float:
    del means  # CARMANIA's cost depends on the length alone
    return training_flops_per_sequence(cfg, n)


def _tensor_parallel_blocks(model: Carmania) -> list:
    return list(model.layers)


CARMANIA_SPEC = ModelSpec(
    name="carmania", config_class=CarmaniaConfig, model_class=Carmania, presets=CARMANIA_PRESETS,
    loss_keys=("loss", "nt", "tm"),
    ratio_keys=(),
    eval_correct="next_base_correct", eval_count="next_base_count", eval_loss="nt",
    eval_accuracy_name="next_base_accuracy",
    flops_per_sequence=_flops_per_sequence,
    tensor_parallel_blocks=_tensor_parallel_blocks,
    training_defaults=TRAINING_DEFAULTS,
    pipeline_layers=None,
)
