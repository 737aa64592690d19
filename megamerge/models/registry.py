"""The model families, one `ModelSpec` each (defined beside each family's model), and one
namespace of preset names across them, so `--model carmania-83m` and `--model 380m` go through the
same entry point, and a saved model can be rebuilt from (family, config dict).

Adding a family: a folder under megamerge/models/ with its config, model and a `spec.py`
holding its `ModelSpec`, and one line in FAMILIES below."""

from __future__ import annotations

from torch import nn

from megamerge.models.carmania.spec import CARMANIA_SPEC
from megamerge.models.mergedna.spec import MERGEDNA_SPEC
from megamerge.models.model_spec import ModelSpec

FAMILIES: dict[str, ModelSpec] = {spec.name: spec for spec in (MERGEDNA_SPEC, CARMANIA_SPEC)}

ALL_PRESETS: dict[str, str] = {}  # preset name -> family name
for _family in FAMILIES.values():
    for _preset in _family.presets:
        if _preset in ALL_PRESETS:
            raise RuntimeError(f"preset {_preset!r} is defined by both {ALL_PRESETS[_preset]} and "
                               f"{_family.name}")
        ALL_PRESETS[_preset] = _family.name


def family_of_preset(name: str) -> ModelSpec:
    if name not in ALL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(ALL_PRESETS)}")
    return FAMILIES[ALL_PRESETS[name]]


def family_of_model(model: nn.Module) -> ModelSpec:
    for family in FAMILIES.values():
        if isinstance(model, family.model_class):
            return family
    raise TypeError(f"{type(model).__name__} is not a megamerge model ({', '.join(FAMILIES)})")


def family_of_config(cfg) -> ModelSpec:
    for family in FAMILIES.values():
        if isinstance(cfg, family.config_class):
            return family
    raise TypeError(f"{type(cfg).__name__} is not a megamerge model config ({', '.join(FAMILIES)})")


def get_family(name: str) -> ModelSpec:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def config_from_preset(name: str, **overrides):
    """The config of preset `name` (either family), with dataclass fields overridden."""
    return family_of_preset(name).config_class.from_preset(name, **overrides)


def build_model_from_preset(name: str, **overrides) -> nn.Module:
    family = family_of_preset(name)
    return family.model_class(family.config_class.from_preset(name, **overrides))


def build_model(family: str, model_config: dict) -> nn.Module:
    """Rebuild a model from its family name and `cfg.to_dict()`."""
    fam = get_family(family)
    return fam.model_class(fam.config_class.from_dict(model_config))
