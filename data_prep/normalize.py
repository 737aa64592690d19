"""Byte-level normalisation of FASTA sequence text into the tokenizer's uint8 codes.

One `bytes.translate` through a 256-entry table maps the text to codes (a C loop over bytes, no
Python loop per base); the counts of invalid, N-like and soft-masked codes are three vectorised
compares on those codes, and 'N'/'n' are counted in the text only in records that hold N or IUPAC
codes. A numpy LUT plus byte histogram (np.bincount widens every base to int64 first) was 1.8x
slower on the real genomes (BENCHMARKS.md). Rules:

* A/C/G/T in either case -> 0..3 (the ids of `megamerge.vocabulary`), N/n -> 4;
* IUPAC ambiguity codes R Y S W K M B D H V in either case -> N (4), counted as `iupac`;
* lower-case letters are soft-masking: accepted, counted as `lower`, and kept as the soft-mask bit
  (SOFTMASK_BIT, 0x08) OR-ed into the code: `byte & CODE_BITS` is the code, `byte & SOFTMASK_BIT`
  the mask. This is the byte of the genome store's `seq` arrays and of the shards' `.seq` members;
  upper-case input gives the plain codes 0..4;
* anything else is invalid: an error, or N (unmasked) under `on_invalid="n"` (counted as `invalid`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from megamerge.base_codes import ALPHABET as BASE_ALPHABET
from megamerge.base_codes import CODE_BITS, SOFTMASK_BIT

# From megamerge.base_codes, not megamerge.vocabulary: the vocabulary pulls in torch, which would
# add seconds to every prepare.py start and every ingest worker.
ALPHABET = BASE_ALPHABET.encode()
N = ALPHABET.index(b"N")
INVALID = 255
IUPAC_AMBIGUITY = b"RYSWKMBDHV"

CODES = np.full(256, INVALID, dtype=np.uint8)
for _code, _ch in enumerate(ALPHABET):
    CODES[_ch] = CODES[_ch + 32] = _code  # upper and lower case
for _ch in IUPAC_AMBIGUITY + IUPAC_AMBIGUITY.lower():
    CODES[_ch] = N

_IS_LOWER = np.zeros(256, dtype=np.uint8)
_IS_LOWER[ord("a") : ord("z") + 1] = 1
_IS_LOWER &= (CODES != INVALID).astype(np.uint8)  # an invalid lower-case byte is only "invalid"
# CODES with the soft-mask bit on lower-case letters: what normalize() writes.
MASKED_CODES = np.where(_IS_LOWER == 1, CODES | SOFTMASK_BIT, CODES).astype(np.uint8)

# The same mappings as translate() tables.
_CODE_TABLE = MASKED_CODES.tobytes()
_CODE_TABLE_INVALID_AS_N = np.where(MASKED_CODES == INVALID, N, MASKED_CODES).astype(np.uint8).tobytes()


@dataclass
class BaseCounts:
    """Counts over the raw input characters of one record (or a sum of records)."""

    length: int = 0
    n: int = 0  # literal N/n in the input
    iupac: int = 0  # ambiguity codes, written as N
    lower: int = 0  # soft-masked (lower-case) bases
    invalid: int = 0  # characters outside the alphabet, written as N (only with on_invalid="n")

    def add(self, other: BaseCounts) -> None:
        # spelled out: dataclasses.asdict per record was a visible share of a 30,000-record file
        self.length += other.length
        self.n += other.n
        self.iupac += other.iupac
        self.lower += other.lower
        self.invalid += other.invalid

    @property
    def n_like(self) -> int:
        """Bases written as N: literal N, ambiguity codes and (with on_invalid="n") invalid ones."""
        return self.n + self.iupac + self.invalid

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class InvalidBaseError(ValueError):
    """A character outside the nucleotide alphabet; `offset` is 0-based within the record."""

    def __init__(self, char: str, offset: int, more: int):
        self.char, self.offset, self.more = char, offset, more
        extra = f" ({more} more invalid characters in this record)" if more else ""
        super().__init__(f"invalid character {char!r} at offset {offset}{extra}")


def normalize(raw: bytes | np.ndarray, on_invalid: str = "error") -> tuple[np.ndarray, BaseCounts]:
    """Raw sequence bytes (line breaks already removed) -> (uint8 codes [L] with the soft-mask bit,
    writable; counts)."""
    if on_invalid not in ("error", "n"):
        raise ValueError(f"on_invalid must be 'error' or 'n', got {on_invalid!r}")
    raw = raw.tobytes() if isinstance(raw, np.ndarray) else bytes(raw)
    codes = bytearray(raw).translate(_CODE_TABLE)  # bytearray: the codes come out writable
    array = np.frombuffer(codes, dtype=np.uint8)  # [L]
    # Counted on the codes by numpy's vectorised compares, cheaper than bytes.count passes
    # (BENCHMARKS.md, "Genome store at corpus scale"). INVALID (255) has the soft-mask bit set and low
    # bits that are not N's.
    invalid = int(np.count_nonzero(array == INVALID))
    n_or_iupac = int(np.count_nonzero((array & CODE_BITS) == N))
    n = raw.count(b"N") + raw.count(b"n") if n_or_iupac else 0
    lower = int(np.count_nonzero(array >= SOFTMASK_BIT)) - invalid
    counts = BaseCounts(length=len(raw), n=n, iupac=n_or_iupac - n, lower=lower, invalid=invalid)
    if invalid:
        if on_invalid == "error":
            first = codes.index(INVALID)
            raise InvalidBaseError(chr(raw[first]), first, invalid - 1)
        codes = bytearray(raw).translate(_CODE_TABLE_INVALID_AS_N)
    return np.frombuffer(codes, dtype=np.uint8), counts
