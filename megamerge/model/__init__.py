from .carmania import Carmania
from .carmania_config import CARMANIA_PRESETS, CarmaniaConfig
from .config import PRESETS, MergeDNAConfig
from .mergedna import MergeDNA
from .registry import ALL_PRESETS, FAMILIES, build_model, build_model_from_preset, config_from_preset

__all__ = [
    "ALL_PRESETS",
    "CARMANIA_PRESETS",
    "FAMILIES",
    "PRESETS",
    "Carmania",
    "CarmaniaConfig",
    "MergeDNA",
    "MergeDNAConfig",
    "build_model",
    "build_model_from_preset",
    "config_from_preset",
]
