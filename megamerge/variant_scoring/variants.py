"""The variants to score, read from a VCF (cyvcf2, plain or bgzipped) or a TSV table, one `Variant` per
ALT allele (a multi-allelic record becomes one variant per ALT), each remembering the input line it
came from so every message can name it.

A TSV table has a header line with at least the columns chrom, pos (1-based), ref and alt; an alt
cell may list several alleles separated by commas, as a VCF's ALT does. Labels (--labels NAME) come
from the INFO field NAME of a VCF or the column NAME of a table: 0/1 or false/true (a VCF Flag:
present 1, absent 0); an empty cell or absent INFO value leaves the variant unlabelled.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from xopen import xopen

TABLE_COLUMNS = ("chrom", "pos", "ref", "alt")
LABEL_VALUES = {"0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}


class VariantInputError(ValueError):
    """Bad variant input: the message names the file, the line and the flag or column."""


@dataclass(frozen=True)
class Variant:
    chrom: str
    pos: int  # 1-based, as in the VCF
    ref: str  # as written in the input (case kept; compared case-insensitively)
    alt: str  # one ALT allele; "." when the record has none
    line: int  # the line of the input file, header lines counted, from 1
    label: int | None = None  # 0 / 1 from --labels; None when unlabelled

    @property
    def start(self) -> int:
        """0-based offset of REF's first base in its contig."""
        return self.pos - 1


def parse_label(value, where: str) -> int | None:
    """A label cell or INFO value -> 0, 1 or None (missing); anything else is a VariantInputError."""
    if value is None or value == "" or value == ".":
        return None
    if isinstance(value, bool):  # a VCF Flag present
        return int(value)
    label = LABEL_VALUES.get(str(value).strip().lower())
    if label is None:
        raise VariantInputError(f"{where}: label {value!r} is not 0/1 or false/true")
    return label


def vcf_header_lines(path: Path) -> int:
    """How many header lines ('#'-prefixed) open the VCF: record i (from 0) is on line header + i + 1."""
    count = 0
    with xopen(path, "rb", threads=0) as handle:
        for line in handle:
            if not line.startswith(b"#"):
                break
            count += 1
    return count


def read_vcf(path: Path, label_field: str | None = None) -> list[Variant]:
    """Every ALT of every record of the VCF at `path`, with the label from INFO field `label_field`."""
    from cyvcf2 import VCF

    if not path.is_file():
        raise VariantInputError(f"--vcf {path}: no such file")
    try:
        reader = VCF(str(path))
    except OSError as e:
        raise VariantInputError(f"--vcf {path}: not a readable VCF ({e})") from None
    try:
        is_flag = label_field is not None and _info_type(reader, label_field, path) == "Flag"
        variants = []
        for line, record in numbered_records(reader, path):
            alts = record.ALT or ["."]
            labels = [None] * len(alts)
            if label_field is not None:
                value = record.INFO.get(label_field)
                value = (value is not None) if is_flag else value
                # Number=A fields hold one value per ALT; any other field applies to every ALT
                one_per_alt = isinstance(value, tuple) and len(value) == len(alts)
                per_alt = value if one_per_alt else [value] * len(alts)
                labels = [parse_label(v, f"{path} line {line}, INFO {label_field}") for v in per_alt]
            variants += [Variant(record.CHROM, record.POS, record.REF, alt, line, label)
                         for alt, label in zip(alts, labels)]
    finally:
        reader.close()
    return variants


def _info_type(reader, field: str, path: Path) -> str:
    try:
        return reader.get_header_type(field)["Type"]
    except KeyError:
        raise VariantInputError(f"--labels {field}: no INFO field {field!r} in the header of "
                                f"{path}") from None


def numbered_records(reader, path: Path):
    """(file line, record) for each record; htslib's parse failures become a VariantInputError naming
    the line."""
    line = vcf_header_lines(path)
    records = iter(reader)
    while True:
        line += 1
        try:
            record = next(records)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - cyvcf2 raises a bare Exception for a record htslib cannot parse
            raise VariantInputError(f"--vcf {path} line {line}: not a valid VCF record ({e})") from None
        yield line, record


def read_table(path: Path, label_column: str | None = None) -> list[Variant]:
    """Every ALT of every row of the tab-separated table at `path` (columns: TABLE_COLUMNS, optionally
    a leading '#' on the header, and `label_column`); blank lines are passed over."""
    if not path.is_file():
        raise VariantInputError(f"--table {path}: no such file")
    with xopen(path, "rt", threads=0, newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        header = [name.lstrip("#").strip() for name in next(rows, [])]
        wanted = TABLE_COLUMNS + ((label_column,) if label_column else ())
        missing = [name for name in wanted if name not in header]
        if missing:
            raise VariantInputError(f"--table {path}: no column {missing[0]!r} in the header {header} "
                                    f"(needed: {', '.join(wanted)}, tab-separated)")
        column = {name: header.index(name) for name in wanted}
        variants = []
        for cells in rows:
            where = f"{path} line {rows.line_num}"
            if not cells:
                continue
            if len(cells) != len(header):
                raise VariantInputError(f"{where}: {len(cells)} cells, the header has {len(header)}")
            chrom, pos, ref, alts = (cells[column[name]].strip() for name in TABLE_COLUMNS)
            if not pos.isdigit() or int(pos) < 1:
                raise VariantInputError(f"{where}: pos {pos!r} is not a 1-based position")
            label = None
            if label_column:
                label = parse_label(cells[column[label_column]], f"{where}, column {label_column}")
            variants += [Variant(chrom, int(pos), ref, alt.strip(), rows.line_num, label)
                         for alt in alts.split(",")]
    return variants
