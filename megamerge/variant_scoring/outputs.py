"""What a scoring run writes: the TSV (chrom, pos, ref, alt, one column per score; one row per scored
variant, in input order) and, for VCF input, the input VCF with one INFO field per score
(megamerge_<score>, Number=A: a value per ALT, '.' for an ALT that was not scored; records with no
scored ALT are copied unchanged). Both are written beside their path and renamed in at the end
(output_dirs.written_then_renamed), so a failed run leaves no partial file.

`is_score_table` and `is_scored_vcf` recognise this tool's earlier outputs, the only files
--overwrite replaces."""

from __future__ import annotations

from pathlib import Path

from xopen import xopen

from megamerge.variant_scoring.run import ScoredVariants
from megamerge.variant_scoring.variants import numbered_records

KEY_COLUMNS = ("chrom", "pos", "ref", "alt")
VCF_HEADER_KEY = "megamerge_score_variants"
INFO_PREFIX = "megamerge_"


def format_score(value: float) -> str:
    return f"{value:.6g}"


def is_score_table(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.readline().startswith("\t".join(KEY_COLUMNS).encode() + b"\t")


def is_scored_vcf(path: Path) -> bool:
    try:
        with xopen(path, "rb", threads=0) as handle:
            for line in handle:
                if not line.startswith(b"##"):
                    return False
                if line.startswith(f"##{VCF_HEADER_KEY}=".encode()):
                    return True
    except (OSError, EOFError, ValueError):  # not a (readable) VCF: not ours
        return False
    return False


def write_table(path: Path, result: ScoredVariants) -> None:
    with open(path, "w") as handle:
        handle.write("\t".join(KEY_COLUMNS + tuple(score.name for score in result.columns)) + "\n")
        for variant, row in zip(result.variants, result.scores):
            cells = [variant.chrom, str(variant.pos), variant.ref, variant.alt, *map(format_score, row)]
            handle.write("\t".join(cells) + "\n")


def write_vcf(path: Path, source: Path, result: ScoredVariants, settings: str, compressed: bool) -> None:
    """`source` with the scores as INFO fields and a ##megamerge_score_variants=<settings> line."""
    from cyvcf2 import VCF, Writer

    by_allele = {(v.line, v.alt): row for v, row in zip(result.variants, result.scores)}
    reader = VCF(str(source))
    try:
        reader.add_to_header(f"##{VCF_HEADER_KEY}=<{settings}>")
        for score in result.columns:
            reader.add_info_to_header({"ID": INFO_PREFIX + score.name, "Number": "A", "Type": "Float",
                                       "Description": score.description})
        writer = Writer(str(path), reader, mode="wz" if compressed else "w")
        try:
            for line, record in numbered_records(reader, source):
                rows = [by_allele.get((line, alt)) for alt in record.ALT]
                if any(row is not None for row in rows):
                    for column, score in enumerate(result.columns):
                        record.INFO[INFO_PREFIX + score.name] = ",".join(
                            "." if row is None else format_score(row[column]) for row in rows)
                writer.write_record(record)
        finally:
            writer.close()
    finally:
        reader.close()
