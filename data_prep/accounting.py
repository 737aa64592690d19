"""Per-species base accounting for the manifest.

Invariant, per species and in total: input_bases == kept_bases + sum(dropped_bases.values()).
`kept_bases` counts a base once however many overlapping chunks hold it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from data_prep.chunking import DROP_REASONS


@dataclass
class SpeciesStats:
    input_bases: int = 0
    kept_bases: int = 0
    dropped_bases: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    records: int = 0
    empty_records: int = 0
    duplicate_ids: int = 0
    n_bases: int = 0  # literal N in the input
    iupac_bases: int = 0  # ambiguity codes, stored as N
    lower_bases: int = 0  # soft-masked input
    invalid_bases: int = 0  # stored as N under --on-invalid n
    samples: dict[str, int] = field(default_factory=lambda: {"train": 0, "valid": 0})

    def add(self, other: SpeciesStats) -> None:
        for key, value in asdict(other).items():
            if isinstance(value, dict):
                mine = getattr(self, key)
                for sub, count in value.items():
                    mine[sub] = mine.get(sub, 0) + count
            else:
                setattr(self, key, getattr(self, key) + value)

    def balanced(self) -> bool:
        return self.input_bases == self.kept_bases + sum(self.dropped_bases.values())

    def as_dict(self) -> dict:
        return asdict(self)


def totals_of(per_species: dict[str, SpeciesStats]) -> SpeciesStats:
    total = SpeciesStats()
    for stats in per_species.values():
        total.add(stats)
    return total
