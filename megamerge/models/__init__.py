"""The model families, one folder each (mergedna/, carmania/), the parts they share (common/), and
the registry (registry.py) of their `ModelSpec`s (model_spec.py), through which the trainer, the
converter, parallelism and the memory estimator read a family."""

from megamerge.models.carmania.config import CARMANIA_PRESETS, CarmaniaConfig
from megamerge.models.carmania.model import Carmania
from megamerge.models.mergedna.config import PRESETS, MergeDNAConfig
from megamerge.models.mergedna.model import MergeDNA
from megamerge.models.registry import (
    ALL_PRESETS,
    FAMILIES,
    ModelSpec,
    build_model,
    build_model_from_preset,
    config_from_preset,
)

__all__ = [
    "ALL_PRESETS",
    "CARMANIA_PRESETS",
    "FAMILIES",
    "PRESETS",
    "Carmania",
    "CarmaniaConfig",
    "MergeDNA",
    "MergeDNAConfig",
    "ModelSpec",
    "build_model",
    "build_model_from_preset",
    "config_from_preset",
]
