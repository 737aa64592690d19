"""Config fields that train.py exposes as flags, each declared once, on the config field itself.

A family's config dataclass declares such a field with `option(...)` (a method choice, with its
paper value) or `setting(...)` (a knob the paper sets a value for, such as a loss weight). The
declaration carries everything the rest of megamerge reads about it:

    the flag        --<field name with dashes>, its choices and help (training/arguments.py);
                    a bool field takes --name / --no-name
    the default     the paper's value, for an option
    validation      the value must be one of `choices`
    deviations      paper_deviations(): the options a config sets away from the paper, which
                    checkpoints, portable files and Hugging Face exports record
    old configs     `before`: what a saved config without the field was trained with
    old flags       `renamed_from`: a flag's earlier name and values, still read, with a warning

Flags default to None ("the preset's value"), so a preset is never overridden by a flag left unset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

METADATA_KEY = "megamerge_flag"
NOT_NAMED = object()  # `before` of a field that every saved config has


@dataclass(frozen=True)
class FlagDeclaration:
    help: str
    choices: tuple | None = None  # the values the field may take (None: any value of its type)
    paper: object = NOT_NAMED  # a method option's paper value; NOT_NAMED for a setting
    before: object = NOT_NAMED  # the value a saved config without this field means
    renamed_from: str | None = None  # the flag's earlier name (dest spelling), still accepted
    renamed_values: dict | None = None  # the earlier flag's values -> this field's values

    @property
    def is_method_option(self) -> bool:
        return self.paper is not NOT_NAMED


def option(paper, choices: tuple, help: str, before=NOT_NAMED, renamed_from: str | None = None,
           renamed_values: dict | None = None):
    """A method option: a field whose default is the paper's choice `paper`, among `choices`."""
    declaration = FlagDeclaration(help, tuple(choices), paper, before, renamed_from, renamed_values)
    return dataclasses.field(default=paper, metadata={METADATA_KEY: declaration})


def setting(default, help: str):
    """A value train.py may set (a loss weight, a range) whose default is the preset's."""
    return dataclasses.field(default=default, metadata={METADATA_KEY: FlagDeclaration(help)})


def declared_fields(config_class) -> dict[str, tuple[dataclasses.Field, FlagDeclaration]]:
    """Field name -> (the dataclass field, its declaration), for every declared field of `config_class`."""
    return {f.name: (f, f.metadata[METADATA_KEY]) for f in dataclasses.fields(config_class)
            if METADATA_KEY in f.metadata}


def paper_deviations(cfg) -> list[str]:
    """The method options in which `cfg` departs from the paper, as "field=value" (empty: the
    paper's method)."""
    return [f"{name}={getattr(cfg, name)}" for name, (_, d) in declared_fields(type(cfg)).items()
            if d.is_method_option and getattr(cfg, name) != d.paper]


def choice_errors(cfg) -> list[str]:
    """A message for every declared field whose value is not among its choices."""
    return [f"{name}={getattr(cfg, name)!r} must be one of {list(d.choices)}"
            for name, (_, d) in declared_fields(type(cfg)).items()
            if d.choices is not None and getattr(cfg, name) not in d.choices]


def values_before_named(config_class) -> dict:
    """What a saved config without each later-named option was trained with (field -> value)."""
    return {name: d.before for name, (_, d) in declared_fields(config_class).items()
            if d.before is not NOT_NAMED}
