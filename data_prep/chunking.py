"""Cutting one record into training chunks, and the base accounting that goes with it.

Chunks start every `seq_len - overlap` bases; the last one ends at the record end and may be
shorter than `seq_len` (the "tail"). A chunk is dropped when its N fraction exceeds `max_n_frac`,
and a tail is dropped when it is shorter than `min_len`. Accounting works on the union of chunk
intervals so that, with overlap, a base is kept once if any kept chunk covers it, and a base that
no kept chunk covers is dropped once, charged to the first reason in `DROP_REASONS` that covers it:

    length == kept + dropped["n_fraction"] + dropped["short_tail"]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_prep.normalize import N
from megamerge.base_codes import CODE_BITS

DROP_REASONS = ("n_fraction", "short_tail")


@dataclass(frozen=True)
class ChunkSpec:
    seq_len: int
    overlap: int = 0
    min_len: int = 0
    max_n_frac: float = 0.1

    def __post_init__(self):
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {self.seq_len}")
        if not 0 <= self.overlap < self.seq_len:
            raise ValueError(f"overlap must be in [0, seq_len), got {self.overlap}")
        if not 0 <= self.min_len <= self.seq_len:
            raise ValueError(f"min_len must be in [0, seq_len], got {self.min_len}")
        if not 0.0 <= self.max_n_frac <= 1.0:
            raise ValueError(f"max_n_frac must be in [0, 1], got {self.max_n_frac}")


@dataclass
class RecordCut:
    starts: np.ndarray  # int64 [K] start of each kept chunk
    lengths: np.ndarray  # int64 [K] its length (== seq_len except possibly the tail)
    kept_bases: int
    dropped_bases: dict[str, int] = field(default_factory=dict)


def chunk_bounds(length: int, spec: ChunkSpec) -> tuple[np.ndarray, np.ndarray]:
    """All chunk intervals [start, end) of a record, before any filtering."""
    if length == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    stride = spec.seq_len - spec.overlap
    count = 1 + max(0, -(-(length - spec.seq_len) // stride))  # ceil; the last chunk reaches the end
    starts = np.arange(count, dtype=np.int64) * stride
    return starts, np.minimum(starts + spec.seq_len, length)


def union_length(starts: np.ndarray, ends: np.ndarray) -> int:
    """Bases covered by a set of intervals; vectorised over intervals, not bases."""
    if starts.size == 0:
        return 0
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    covered_until = np.concatenate([[0], np.maximum.accumulate(ends)[:-1]])
    return int(np.maximum(0, ends - np.maximum(starts, covered_until)).sum())


def n_counts(codes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """N bases (soft-masked or not) in each [start, end). Most records have few or no N: their
    positions are found once and counted per chunk with two binary searches (np.add.reduceat over
    a bool per base, widened to int64 element by element, was most of the cutting time). An N-rich
    record takes prefix sums only at chunk boundaries instead, so memory stays at one bool per base
    (positions or an int64 prefix over a 250 Mbp chromosome of gaps would need 2 GB)."""
    if starts.size == 0:
        return np.zeros(0, np.int64)
    is_n = (codes & CODE_BITS) == N
    n_total = int(np.count_nonzero(is_n))
    if n_total * 8 <= codes.size:  # positions cost no more than the bool array
        positions = np.flatnonzero(is_n)
        return np.searchsorted(positions, ends) - np.searchsorted(positions, starts)
    bounds = np.unique(np.concatenate([starts, ends]))  # sorted; bounds[0] == 0, bounds[-1] == L
    segment = np.add.reduceat(is_n, bounds[:-1], dtype=np.int64)  # N in [b_i, b_i+1)
    prefix = np.concatenate([[0], np.cumsum(segment)])  # N in [0, b_i)
    return prefix[np.searchsorted(bounds, ends)] - prefix[np.searchsorted(bounds, starts)]


def cut_record(codes: np.ndarray, spec: ChunkSpec, n_bases: int | None = None) -> RecordCut:
    """Chunks to keep and the accounting. `n_bases`, the record's N count when the caller already
    has it, lets a record without N skip the N scan and the interval unions (most records of a
    draft assembly: ~80 us of numpy calls each, more than parsing them)."""
    length = int(codes.size)
    starts, ends = chunk_bounds(length, spec)
    spans = ends - starts
    if n_bases == 0:
        # Every chunk but the last is seq_len long, so only the tail can be short, and the kept
        # chunks are a prefix of overlapping intervals: their union is [0, end of the last kept).
        keep = spans >= spec.min_len
        kept = int(ends[keep][-1]) if keep.any() else 0
        return RecordCut(starts[keep], spans[keep], kept, {"n_fraction": 0, "short_tail": length - kept})
    n_frac = n_counts(codes, starts, ends) / np.maximum(spans, 1)
    short = spans < spec.min_len
    too_many_n = ~short & (n_frac > spec.max_n_frac)
    keep = ~short & ~too_many_n

    kept = union_length(starts[keep], ends[keep])
    kept_or_n = union_length(starts[keep | too_many_n], ends[keep | too_many_n])
    dropped = {"n_fraction": kept_or_n - kept, "short_tail": length - kept_or_n}
    return RecordCut(starts[keep], spans[keep], kept, dropped)
