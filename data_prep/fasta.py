"""Reading FASTA input, plain or compressed: file discovery, species labels, and a record iterator
whose every failure is an `InputError` naming the file (and the record and offset when there is one).

Records are split by data_prep/fasta_records.py: dnaio's FASTA semantics (the parser chosen by
measurement against pyfastx and Biopython, BENCHMARKS.md) at the speed of bytes operations, since
dnaio's FASTA loop is pure Python per line. Decompression is xopen's (gzip/bgzip, bz2, xz, zstd;
data_prep/compression.py decides what is readable), which, unlike pyfastx, reports a truncated
gzip member instead of silently returning the sequence read so far.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xopen import xopen

from data_prep.compression import (
    BGZF_EOF,
    DECOMPRESSION_ERRORS,
    compression_problem,
    compression_suffix,
    is_bgzf,
)
from data_prep.fasta_records import FastaFormatError, iter_fasta
from data_prep.normalize import BaseCounts, InvalidBaseError, normalize

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".fsa", ".ffn", ".frn", ".mfa", ".seq")
INDEX_SUFFIXES = (".fai", ".gzi")  # samtools indexes that sit beside a FASTA


class InputError(Exception):
    """Bad input data: the CLI prints the message on one line and exits non-zero."""


@dataclass
class Record:
    index: int  # position of the record in its file
    record_id: str  # first word of the header
    description: str  # the full header line
    codes: np.ndarray  # uint8 [L], tokenizer codes
    counts: BaseCounts


@dataclass
class InputScan:
    files: list[Path]  # what will be read, in order
    skipped: list[str] = field(default_factory=list)  # "PATH: why", for every file of a directory left out


def strip_compression(name: str) -> str:
    suffix = compression_suffix(name)
    return name[: -len(suffix)] if suffix else name


def is_fasta_path(path: Path) -> bool:
    """A FASTA name, optionally with a compression suffix: `x.fa`, `x.FNA.gz`, `x.fsa.zst`, ..."""
    return strip_compression(path.name).lower().endswith(FASTA_SUFFIXES)


def _skip_reason(path: Path, root: Path) -> str | None:
    """Why a file found in an input directory is not read (None: it is read). A FASTA name with
    a compression we cannot read is not skipped: `_check_file` refuses it by name."""
    hidden = [part for part in path.relative_to(root).parts if part.startswith(".")]
    if hidden:
        return f"hidden ({hidden[0]})"
    if is_fasta_path(path):
        return None
    if path.name.lower().endswith(INDEX_SUFFIXES):
        return "an index file, not sequence"
    return f"not a FASTA file name ({' '.join(FASTA_SUFFIXES)}, optionally compressed)"


def scan_inputs(inputs: list[str | Path]) -> InputScan:
    """Expand directories (recursively) and keep explicit files as given; record every file of a
    directory that is left out and why."""
    scan = InputScan([])
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                reason = _skip_reason(found, path)
                if reason:
                    scan.skipped.append(f"{found}: {reason}")
                else:
                    scan.files.append(found)
        elif path.is_file():
            scan.files.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    if not scan.files:
        skipped = f" (skipped: {'; '.join(scan.skipped[:5])}{' ...' if len(scan.skipped) > 5 else ''})"
        where = ", ".join(map(str, inputs))
        raise InputError(f"no FASTA files found in {where}{skipped if scan.skipped else ''}")
    resolved = [p.resolve() for p in scan.files]
    if len(set(resolved)) != len(resolved):
        raise InputError("the same input file is given more than once")
    return scan


def find_fasta_files(inputs: list[str | Path]) -> list[Path]:
    return scan_inputs(inputs).files


def default_species(path: Path) -> str:
    """The file name without its FASTA and compression suffixes: `E_coli.fna.gz` -> `E_coli`."""
    name = strip_compression(path.name)
    for suffix in FASTA_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_species_map(path: Path) -> dict[str, str]:
    """TSV `file<TAB>species`; the file column may be a base name, a species-style stem or a path."""
    mapping: dict[str, str] = {}
    with open(path, newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 2 or not row[1].strip():
                raise InputError(f"{path}:{line_no}: expected 'file<TAB>species', got {row!r}")
            mapping[row[0].strip()] = row[1].strip()
    return mapping


def species_for(path: Path, mapping: dict[str, str]) -> str:
    for key in (str(path), str(path.resolve()), path.name, default_species(path)):
        if key in mapping:
            return mapping[key]
    return default_species(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _check_file(path: Path) -> None:
    """Catch what the parser would report badly: an empty file, a compression that the name
    contradicts or that we cannot read, a damaged compressed stream, binary data, non-FASTA text."""
    with open(path, "rb") as handle:
        raw = handle.read(1 << 16)
        if is_bgzf(raw):
            handle.seek(max(0, path.stat().st_size - len(BGZF_EOF)))
            if handle.read() != BGZF_EOF:
                raise InputError(f"{path}: truncated or corrupt bgzip file (the end-of-file block that bgzip "
                                 "writes last is missing)")
    if not raw:
        raise InputError(f"{path}: empty file")
    problem = compression_problem(path.name, raw)
    if problem:
        raise InputError(f"{path}: {problem}")
    try:
        with xopen(path, "rb", threads=0) as handle:
            head = handle.read(1 << 16)
    except DECOMPRESSION_ERRORS as exc:
        raise InputError(f"{path}: truncated or corrupt compressed data ({exc})") from None
    if not head:
        raise InputError(f"{path}: empty file (the compressed stream holds no data)")
    if b"\x00" in head:
        raise InputError(f"{path}: binary data, not FASTA text")
    if not head.lstrip().startswith(b">"):
        first_line = head.lstrip().split(b"\n", 1)[0][:60].decode("utf-8", "replace")
        raise InputError(f"{path}: not FASTA (expected '>' at the start, found {first_line!r})")


def read_fasta(path: Path, on_invalid: str = "error") -> Iterator[Record]:
    """Yield normalised records of one FASTA file (plain or compressed); raise InputError on anything
    malformed."""
    path = Path(path)
    _check_file(path)
    index = -1
    record_id = ""
    total_bases = 0
    try:
        with xopen(path, "rb", threads=0) as handle:
            for index, (header, sequence) in enumerate(iter_fasta(handle)):
                record_id = header.split(maxsplit=1)[0] if header.strip() else ""
                codes, counts = normalize(sequence, on_invalid)
                total_bases += counts.length
                yield Record(index, record_id, header, codes, counts)
    except InvalidBaseError as exc:
        name = repr(record_id) if record_id else "(empty header)"
        raise InputError(f"{path}: record #{index} {name}: {exc}") from None
    except InputError:
        raise
    except DECOMPRESSION_ERRORS as exc:
        raise InputError(
            f"{path}: truncated or corrupt file ({exc}); {index + 1} records were read before the damage"
        ) from None
    except (FastaFormatError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not valid FASTA ({exc})") from None
    if index < 0:
        raise InputError(f"{path}: no FASTA records")
    if total_bases == 0:
        # Header lines and nothing else: almost always a failed download or export, never a genome.
        raise InputError(f"{path}: {index + 1} record(s) but no sequence data")
