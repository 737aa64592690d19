"""Single-base variants with a known effect on the synthetic genomes of data_prep/synthetic.py
(--variants N): the ground truth of the zero-shot benchmark (benchmarks/zero_shot.py).

    label 1 (MOTIF=1)  breaks a conserved motif: a base of a planted motif instance that agrees with
                       its motif's consensus, changed to another base. The instances were planted
                       with ~8% of their bases mutated; those bases are passed over, since changing
                       one could restore the consensus instead of breaking it.
    label 0 (MOTIF=0)  unconstrained: a base of background (the species' own Markov chain) at least
                       BACKGROUND_MARGIN bases from the ends of its region, so from every planted
                       region, changed to another base.

Per species, half of the N variants (rounded down) are motif-breaking and the rest background, each
class drawn without replacement and uniformly over its eligible bases; ALT is one of the three other
bases, uniformly. The draw has a random stream of its own (from --seed and the species index), so
the genomes do not depend on --variants. Written as VCF 4.2, sorted by record and position, with a
##contig line per record and the INFO fields MOTIF (the label, for tools/score_variants.py --labels
MOTIF) and REGION (motifK, the species' planted motif K, or background).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.species_model import BASES

BACKGROUND_MARGIN = 20  # the longest planted motif: no background variant touches a motif's context
VARIANT_STREAM = 104_729  # the variants' own random stream, apart from the genome's
LABEL_FIELD = "MOTIF"
REGION_FIELD = "REGION"
BACKGROUND = "background"


@dataclass(frozen=True)
class PlantedVariant:
    chrom: str
    pos: int  # 1-based, as in the VCF
    ref: str
    alt: str
    label: int  # 1: breaks a planted motif instance; 0: unconstrained background
    region: str  # motifK or background


@dataclass(frozen=True)
class GenomeRecord:
    name: str
    seq: bytes  # as written to the FASTA (soft-masked repeats in lower case)
    regions: list[tuple[int, int, str, str]]  # (start, end, type, detail), 0-based half-open, tiling seq


def eligible_bases(record: GenomeRecord, motifs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray,
                                                                              np.ndarray]:
    """(0-based positions of the motif bases that agree with their consensus [M], the motif index of
    each [M], positions of the background bases away from their region's ends [B])."""
    letters = np.frombuffer(record.seq, dtype=np.uint8)
    motif_positions, motif_ids, background = [], [], []
    for start, end, kind, detail in record.regions:
        if kind == "motif":
            motif = int(detail.removeprefix("motif"))
            consensus = BASES[motifs[motif]][: end - start]  # the record's end may cut an instance short
            agrees = start + np.flatnonzero(letters[start:end] == consensus)
            motif_positions.append(agrees)
            motif_ids.append(np.full(agrees.size, motif))
        elif kind == BACKGROUND:
            background.append(np.arange(start + BACKGROUND_MARGIN, end - BACKGROUND_MARGIN))
    joined = [np.concatenate(parts or [np.zeros(0)]).astype(np.int64)
              for parts in (motif_positions, motif_ids, background)]
    return joined[0], joined[1], joined[2]


def draw_variants(records: list[GenomeRecord], motifs: list[np.ndarray], count: int,
                  rng: np.random.Generator, species: str) -> list[PlantedVariant]:
    """`count` variants over `records` (count // 2 motif-breaking, the rest background), sorted by record
    and position. A ValueError names --variants when a class has fewer eligible bases than asked."""
    sites = {1: [], 0: []}  # label -> [(record index [n], position [n], motif index or -1 [n])]
    for index, record in enumerate(records):
        motif_positions, motif_ids, background = eligible_bases(record, motifs)
        sites[1].append((np.full(motif_positions.size, index), motif_positions, motif_ids))
        sites[0].append((np.full(background.size, index), background, np.full(background.size, -1)))
    wanted = {1: count // 2, 0: count - count // 2}
    picked = []  # (record index, position, motif index or -1, label)
    for label in (1, 0):
        record_index, positions, motif_ids = (np.concatenate(column) for column in zip(*sites[label]))
        if wanted[label] > positions.size:
            kind = "motif bases that agree with their consensus" if label else "background bases"
            raise ValueError(f"--variants {count}: {species} has {positions.size:,} eligible {kind}, fewer "
                             f"than the {wanted[label]:,} asked for; lower --variants or raise --length")
        chosen = rng.choice(positions.size, size=wanted[label], replace=False)
        picked += [(int(record_index[i]), int(positions[i]), int(motif_ids[i]), label) for i in chosen]
    variants = []
    for index, pos, motif, label in sorted(picked):
        record = records[index]
        ref = chr(record.seq[pos]).upper()
        alt = "ACGT"[("ACGT".index(ref) + int(rng.integers(1, 4))) % 4]  # one of the other three bases
        region = f"motif{motif}" if label else BACKGROUND
        variants.append(PlantedVariant(record.name, pos + 1, ref, alt, label, region))
    return variants


LABEL_HEADER = (f'##INFO=<ID={LABEL_FIELD},Number=1,Type=Integer,Description="1: breaks a planted '
                'motif instance (a base that agrees with its motif consensus, changed); 0: unconstrained '
                'background">')
REGION_HEADER = (f'##INFO=<ID={REGION_FIELD},Number=1,Type=String,Description="The planted region: motifK '
                 '(the species motif K) or background">')


def vcf_text(variants: list[PlantedVariant], records: list[GenomeRecord], fasta_name: str, seed: int) -> str:
    header = ["##fileformat=VCFv4.2", f"##source=megamerge data_prep/synthetic.py --variants (seed {seed})",
              f"##reference={fasta_name}",
              *(f"##contig=<ID={record.name},length={len(record.seq)}>" for record in records),
              LABEL_HEADER, REGION_HEADER, "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    rows = [f"{v.chrom}\t{v.pos}\t.\t{v.ref}\t{v.alt}\t.\t.\t"
            f"{LABEL_FIELD}={v.label};{REGION_FIELD}={v.region}" for v in variants]
    return "\n".join(header + rows) + "\n"


def write_variants(path: Path, records: list[GenomeRecord], motifs: list[np.ndarray], count: int, seed: int,
                   species_index: int, species: str, fasta_name: str) -> dict[str, int]:
    """Draw `count` variants of one species and write them as a VCF at `path` -> counts per class."""
    rng = np.random.default_rng([seed, species_index, VARIANT_STREAM])
    variants = draw_variants(records, motifs, count, rng, species)
    path.write_text(vcf_text(variants, records, fasta_name, seed))
    breaking = sum(v.label for v in variants)
    return {"motif_breaking": breaking, "background": len(variants) - breaking}
