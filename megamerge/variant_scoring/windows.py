"""The REF and ALT windows a variant is scored on.

Both windows cover the same reference span: F = (window - 1) // 2 reference bases on each side of
the variant's REF allele, REF itself in the REF window and ALT in the ALT window. An SNV's windows
are 2F + 1 bases (`window` bases when it is odd, one fewer when it is even) with the variant exactly
in the middle; an indel's ALT window is len(ALT) - len(REF) bases longer than its REF window.
Because the flanks are equal, the reverse complement of a variant's windows is the windows of the
reverse-complemented variant on the reverse-complemented genome, which is what makes strand
averaging symmetric.

Near a contig end the window is clipped: the flank on that side stops at the contig's end (the
variant is then off-centre), the other flank keeps its F bases. Such variants are scored and
counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from megamerge.variant_scoring.variants import Variant
from megamerge.vocabulary import encode, reverse_complement


@dataclass(frozen=True)
class WindowPair:
    ref: torch.Tensor  # [n] long ids: the reference window
    alt: torch.Tensor  # [n + len(ALT) - len(REF)] long ids: the same span with ALT in place of REF
    offset: int  # where the variant's first base sits in both windows
    ref_length: int  # len(REF)

    def reverse_complement(self) -> WindowPair:
        """The same windows read on the other strand: the variant's span ends where it started."""
        return WindowPair(reverse_complement(self.ref), reverse_complement(self.alt),
                          len(self.ref) - self.offset - self.ref_length, self.ref_length)


def flank_length(window: int) -> int:
    return (window - 1) // 2


def variant_windows(contig: np.ndarray, variant: Variant, window: int) -> tuple[WindowPair, bool]:
    """(the variant's windows in the contig's codes [length], whether a contig end clipped them); REF is
    taken from the contig, so it must have been checked against it first (reference.reference_mismatch)."""
    flank = flank_length(window)
    start, end = variant.start, variant.start + len(variant.ref)
    left, right = max(0, start - flank), min(len(contig), end + flank)
    ref = torch.from_numpy(contig[left:right].astype(np.int64))
    alt_allele = torch.from_numpy(encode(variant.alt).astype(np.int64))
    alt = torch.cat([ref[:start - left], alt_allele, ref[end - left:]])
    clipped = left > start - flank or right < end + flank
    return WindowPair(ref, alt, start - left, len(variant.ref)), clipped
