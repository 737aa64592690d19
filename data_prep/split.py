"""Train / valid assignment of whole records: held-out species, or a stable hash of the record id.

The hash is sha256, not Python's salted `hash()`, so a record lands in the same split on every
machine and every re-cut; records sharing an id land together, which keeps duplicates from
leaking across the split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class SplitSpec:
    valid_species: frozenset[str] = frozenset()
    valid_frac: float = 0.0

    def __post_init__(self):
        if self.valid_species and self.valid_frac:
            raise ValueError("use either held-out species or a valid fraction, not both")
        if not 0.0 <= self.valid_frac < 1.0:
            raise ValueError(f"valid_frac must be in [0, 1), got {self.valid_frac}")

    def split_of(self, species: str, record_id: str) -> str:
        if self.valid_species:
            return "valid" if species in self.valid_species else "train"
        if self.valid_frac > 0.0:
            return "valid" if record_id_fraction(record_id) < self.valid_frac else "train"
        return "train"


def record_id_fraction(record_id: str) -> float:
    """Map a record id to a uniform number in [0, 1)."""
    digest = hashlib.sha256(record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64
