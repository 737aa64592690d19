"""The reference genome around each variant: the contigs the variants name, read with data_prep's FASTA
reader (plain or compressed; IUPAC codes become N, soft-masking is dropped), and the check that a
variant's REF is what the FASTA holds there."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from megamerge.variant_scoring.variants import Variant
from megamerge.vocabulary import decode


def load_contigs(fasta: Path, names: set[str]) -> tuple[dict[str, np.ndarray], set[str]]:
    """(base codes uint8 [length] of each record of `fasta` whose id is in `names`; the ids of all its
    records). The other records are read past, not kept. data_prep's InputError on bad FASTA."""
    from data_prep.fasta import InputError, read_fasta
    from megamerge.data.shards import split_softmask

    contigs, ids = {}, set()
    for record in read_fasta(fasta):
        if record.record_id in ids:
            raise InputError(f"{fasta}: record id {record.record_id!r} appears twice (record "
                             f"#{record.index}); a variant's contig would be ambiguous")
        ids.add(record.record_id)
        if record.record_id in names:
            contigs[record.record_id] = split_softmask(record.codes)[0]
    return contigs, ids


def missing_contig_hint(chrom: str, fasta_ids: set[str]) -> str:
    """A likely naming mismatch ('1' against 'chr1'), said where the FASTA has the other spelling."""
    other = chrom.removeprefix("chr") if chrom.startswith("chr") else f"chr{chrom}"
    return f"; the FASTA has {other!r}: a naming mismatch?" if other in fasta_ids else ""


def reference_mismatch(contig: np.ndarray, variant: Variant) -> str | None:
    """What is wrong with `variant`'s REF against its contig's codes [length], or None if it matches
    (case-insensitively; N matches N, including the N an IUPAC code became)."""
    end = variant.start + len(variant.ref)
    if end > len(contig):
        return f"REF {variant.ref} at {variant.chrom}:{variant.pos} ends past the contig, {len(contig)} bp"
    found = decode(contig[variant.start:end])
    if found != variant.ref.upper():
        return f"REF {variant.ref}, FASTA {found}"
    return None
