"""Splitting decompressed FASTA into (header, sequence) records, with dnaio's FASTA semantics at the
speed of bytes operations.

dnaio's FASTA reader (the one data_prep used until issue 16) is pure Python line by line: decode
as text with universal newlines, strip each line, skip blank lines and `#` comment lines, a line
starting with '>' opens a record whose name is the rest of the line, sequence lines are joined.
On a draft assembly that loop over 80-base lines cost more CPU than everything else together.
Here the text is read in large blocks and cut at "\\n>" boundaries; a record whose sequence lines
hold nothing but ASCII letters and line breaks (all real FASTA) is done with one
`bytes.translate` that deletes the line breaks. Any other record (comments, blank or indented
lines, stray spaces, non-ASCII, a lone CR before '>') goes through dnaio's loop verbatim
(`_records_by_line`), so the records and names are dnaio's in every case, and so is what is
refused: text before the first header, invalid UTF-8, a name or sequence that is not ASCII
(tests/unit/test_data_bad_input.py compares the two on random text).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

BLOCK = 1 << 23  # bytes read at a time; a record longer than this is assembled from several blocks
_LINE_BREAKS = b"\r\n"


class FastaFormatError(ValueError):
    """Text that is not FASTA: sequence before the first header, a name or sequence not ASCII."""


def iter_fasta(handle: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """(name, sequence) per record of the decompressed FASTA `handle`: the name as dnaio gives it
    (the header line after '>', right-stripped), the sequence as ASCII bytes without line breaks."""
    chunks: list[bytes] = []
    started = False
    while block := handle.read(BLOCK):
        if not started:  # leading blank lines, then the first record must open with '>'
            block = block.lstrip()
            if not block:
                continue
            started = True
        previous_tail = chunks[-1][-1:] if chunks else b""
        chunks.append(block)
        if b"\n>" not in previous_tail + block:
            continue
        data = b"".join(chunks)
        cut = data.rfind(b"\n>")
        yield from _records(data[: cut + 1])
        chunks = [data[cut + 1 :]]
    if chunks:
        yield from _records(b"".join(chunks))


def _records(region: bytes) -> Iterator[tuple[str, bytes]]:
    """Whole records: `region` starts with '>' at a line start and ends at a record end."""
    if not region.startswith(b">"):
        yield from _records_by_line(region)  # raises: text before the first header
        return
    for part in region[1:].split(b"\n>"):
        newline = part.find(b"\n")
        header, body = (part, b"") if newline < 0 else (part[:newline], part[newline + 1 :])
        sequence = body.translate(None, _LINE_BREAKS)
        if (sequence.isalpha() or not sequence) and b"\r" not in header.rstrip(b"\r"):
            yield header.decode("ascii").rstrip(), sequence  # UnicodeDecodeError: dnaio refuses it too
        else:
            yield from _records_by_line(b">" + part)


def _records_by_line(text: bytes) -> Iterator[tuple[str, bytes]]:
    """dnaio.FastaReader.__iter__ (dnaio 1.2) on `text`, line for line, with its SequenceRecord's
    check that name and sequence are ASCII."""
    name, sequence = None, []
    for line in io.StringIO(text.decode("utf-8"), newline=None):  # universal newlines, as TextIOWrapper
        line = line.strip()  # also removes DOS line breaks
        if not line or line[0] == "#":
            continue
        if line[0] == ">":
            if name is not None:
                yield _ascii_record(name, "".join(sequence))
            name, sequence = line[1:], []
        elif name is not None:
            sequence.append(line)
        else:
            raise FastaFormatError(f"Expected '>' at beginning of record, but got {line[:60]!r}.")
    if name is not None:
        yield _ascii_record(name, "".join(sequence))


def _ascii_record(name: str, sequence: str) -> tuple[str, bytes]:
    for field, text in (("name", name), ("sequence", sequence)):
        if not text.isascii():
            index = next(i for i, char in enumerate(text) if not char.isascii())
            raise FastaFormatError(f"the {field} of record {name!r} must be ASCII, but has {text[index]!r} "
                                   f"at index {index}")  # fmt: skip
    return name, sequence.encode("ascii")
