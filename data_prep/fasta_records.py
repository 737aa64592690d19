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
from itertools import pairwise
from typing import BinaryIO

BLOCK = 1 << 23  # bytes read at a time; a record longer than this is assembled from several blocks
_LINE_BREAKS = b"\r\n"
_NEWLINE = ord("\n")


class FastaFormatError(ValueError):
    """Text that is not FASTA: sequence before the first header, a name or sequence not ASCII."""


def iter_fasta(handle: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """(name, sequence) per record of the decompressed FASTA `handle`: the name as dnaio gives it
    (the header line after '>', right-stripped), the sequence as ASCII bytes without line breaks."""
    pending: list[bytes] = []  # the text since the last record start, in the blocks it came in
    started = False
    ends_line = False  # the previous block ended with a line break: a '>' opening this one starts a record
    while block := handle.read(BLOCK):
        if not started:  # leading blank lines, then the first record must open with '>'
            block = block.lstrip()
            if not block:
                continue
            started = True
        # Record starts: a '>' that opens a line. Finding '>' alone is a memchr over the block (headers
        # are rare), ten times faster than finding "\n>", which stops at every line break.
        starts = []
        found = block.find(b">")
        while found >= 0:
            if (block[found - 1] == _NEWLINE) if found else ends_line:
                starts.append(found)
            found = block.find(b">", found + 1)
        ends_line = block.endswith(b"\n")
        if not starts:
            pending.append(block)
            continue
        if pending or starts[0]:  # the record (or the text before the first header) that ends here
            pending.append(block[: starts[0]])
            yield from _region(b"".join(pending))
        for start, stop in pairwise(starts):
            yield from _record(block, start, stop)
        pending = [block[starts[-1] :]]
    if pending:
        yield from _region(b"".join(pending))


def _region(text: bytes) -> Iterator[tuple[str, bytes]]:
    """Text holding no record start but possibly its first byte: one record, or what precedes the
    first header (which only blank and comment lines may)."""
    if text.startswith(b">"):
        yield from _record(text, 0, len(text))
    else:
        yield from _records_by_line(text)  # raises: text before the first header


def _record(text: bytes, start: int, stop: int) -> Iterator[tuple[str, bytes]]:
    """The record text[start:stop], which opens with '>' at a line start and runs to a record end."""
    newline = text.find(b"\n", start, stop)
    header_end = stop if newline < 0 else newline
    header = text[start + 1 : header_end]
    sequence = text[header_end + 1 : stop].translate(None, _LINE_BREAKS)
    if (sequence.isalpha() or not sequence) and b"\r" not in header.rstrip(b"\r"):
        yield header.decode("ascii").rstrip(), sequence  # UnicodeDecodeError: dnaio refuses it too
    else:
        yield from _records_by_line(text[start:stop])


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
