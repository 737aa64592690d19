"""Byte-level normalisation of FASTA sequence text into the tokenizer's uint8 codes.

One 256-entry table does the mapping and one byte histogram gives every count, so a record is
normalised in two vectorised passes with no Python loop per base:

* A/C/G/T in either case -> 0..3 (the ids of `megamerge.tokenizer`), N/n -> 4;
* IUPAC ambiguity codes R Y S W K M B D H V in either case -> N (4), counted as `iupac`;
* lower-case letters are soft-masking: accepted, upper-cased, counted as `lower`;
* anything else is invalid: an error, or N under `on_invalid="n"` (counted as `invalid`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# The ids of megamerge.tokenizer (tests check they agree). Not imported from there: the tokenizer
# pulls in torch, which would add seconds to every prepare.py start and every ingest worker.
ALPHABET = b"ACGTN"
N = 4
INVALID = 255
IUPAC_AMBIGUITY = b"RYSWKMBDHV"

CODES = np.full(256, INVALID, dtype=np.uint8)
for _code, _ch in enumerate(ALPHABET):
    CODES[_ch] = CODES[_ch + 32] = _code  # upper and lower case
for _ch in IUPAC_AMBIGUITY + IUPAC_AMBIGUITY.lower():
    CODES[_ch] = N

# Per-byte class masks, dotted with the byte histogram to get the counts.
_IS_LOWER = np.zeros(256, dtype=np.int64)
_IS_LOWER[ord("a") : ord("z") + 1] = 1
_IS_LOWER &= (CODES != INVALID).astype(np.int64)  # an invalid lower-case byte is only "invalid"
_IS_N = np.zeros(256, dtype=np.int64)
_IS_N[[ord("N"), ord("n")]] = 1
_IS_IUPAC = np.zeros(256, dtype=np.int64)
_IS_IUPAC[list(IUPAC_AMBIGUITY + IUPAC_AMBIGUITY.lower())] = 1
_IS_INVALID = (CODES == INVALID).astype(np.int64)


@dataclass
class BaseCounts:
    """Counts over the raw input characters of one record (or a sum of records)."""

    length: int = 0
    n: int = 0  # literal N/n in the input
    iupac: int = 0  # ambiguity codes, written as N
    lower: int = 0  # soft-masked (lower-case) bases
    invalid: int = 0  # characters outside the alphabet, written as N (only with on_invalid="n")

    def add(self, other: BaseCounts) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class InvalidBaseError(ValueError):
    """A character outside the nucleotide alphabet; `offset` is 0-based within the record."""

    def __init__(self, char: str, offset: int, more: int):
        self.char, self.offset, self.more = char, offset, more
        extra = f" ({more} more invalid characters in this record)" if more else ""
        super().__init__(f"invalid character {char!r} at offset {offset}{extra}")


def normalize(raw: bytes | np.ndarray, on_invalid: str = "error") -> tuple[np.ndarray, BaseCounts]:
    """Raw sequence bytes (line breaks already removed) -> (uint8 codes [L], counts)."""
    if on_invalid not in ("error", "n"):
        raise ValueError(f"on_invalid must be 'error' or 'n', got {on_invalid!r}")
    raw = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray, memoryview)) else raw
    histogram = np.bincount(raw, minlength=256)
    counts = BaseCounts(
        length=int(raw.size),
        n=int(histogram @ _IS_N),
        iupac=int(histogram @ _IS_IUPAC),
        lower=int(histogram @ _IS_LOWER),
        invalid=int(histogram @ _IS_INVALID),
    )
    codes = CODES[raw]
    if counts.invalid:
        if on_invalid == "error":
            first = int(np.flatnonzero(codes == INVALID)[0])
            raise InvalidBaseError(chr(raw[first]), first, counts.invalid - 1)
        codes[codes == INVALID] = N
    return codes, counts
