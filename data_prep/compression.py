"""Which compression a FASTA input uses, by its name and by its first bytes, and whether we read it.

The reading itself is xopen's (through dnaio): gzip (bgzip is gzip in independent members),
bzip2, xz and zstd (xopen uses `backports.zstd` on Python < 3.14, one of its own dependencies).
This module only decides, before any parsing, whether a file is something we can read, so that a
file whose name and content disagree (a plain-text `.fa.gz`, a gzip file named `.bz2`) or that is
an archive is refused by name instead of failing deep in a decompressor.
"""

from __future__ import annotations

import lzma

try:
    from compression.zstd import ZstdError  # Python >= 3.14
except ImportError:
    try:
        from backports.zstd import ZstdError  # what xopen >= 2.1 itself reads zstd with (its dependency)
    except ImportError:  # an older xopen: its zstd errors, if it reads zstd at all, are OSErrors
        ZstdError = OSError

# Suffix (lower case) -> the compression it names. bgzip output is often named `.bgz`.
COMPRESSION_SUFFIXES = {
    ".gz": "gzip", ".gzip": "gzip", ".bgz": "gzip", ".bz2": "bz2", ".xz": "xz",
    ".zst": "zstd", ".zstd": "zstd",
}  # fmt: skip
# Archives and compressors xopen does not read: named in the refusal so the user knows what to do.
UNREADABLE_SUFFIXES = {
    ".zip": "a zip archive", ".7z": "a 7-zip archive", ".rar": "a rar archive", ".tar": "a tar archive",
    ".tgz": "a tar archive", ".lz4": "lz4-compressed", ".lz": "lzip-compressed", ".lzma": "lzma-compressed",
    ".z": "compress(1)-compressed", ".br": "brotli-compressed",
}  # fmt: skip
# First bytes -> format. Plain FASTA starts with '>' (or whitespace), so none of these collide with it.
MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "a zip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-zip archive"),
    (b"\x04\x22\x4d\x18", "lz4-compressed"),
    (b"\x1f\x9d", "compress(1)-compressed"),
)
# bgzip ends every file with this empty block, so a BGZF file cut at a member boundary (which gzip
# itself cannot tell from a complete one) is recognised by its absence, as samtools does.
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
READABLE = frozenset(COMPRESSION_SUFFIXES.values())
SUPPORTED_TEXT = "plain text, gzip (incl. bgzip), bz2, xz or zstd"
# What the decompressors raise on damaged input (gzip and bz2 raise OSError / EOFError).
DECOMPRESSION_ERRORS = (OSError, EOFError, lzma.LZMAError, ZstdError)


def compression_suffix(name: str) -> str | None:
    """The compression suffix of a file name (`.gz`, `.zip`, ...), lower case, or None."""
    lower = name.lower()
    for suffix in (*COMPRESSION_SUFFIXES, *UNREADABLE_SUFFIXES):
        if lower.endswith(suffix):
            return suffix
    return None


def format_of_bytes(head: bytes) -> str | None:
    """The compression the first bytes of a file announce, or None for uncompressed data."""
    for magic, fmt in MAGIC:
        if head.startswith(magic):
            return fmt
    return None


def is_bgzf(head: bytes) -> bool:
    """gzip with the FEXTRA flag whose first extra subfield is BGZF's 'BC'."""
    return head[:4] == b"\x1f\x8b\x08\x04" and head[12:14] == b"BC"


def compression_problem(name: str, head: bytes) -> str | None:
    """Why a file with this name and these first bytes cannot be read, or None when it can."""
    content = format_of_bytes(head)
    if content is not None and content not in READABLE:
        return f"{content}, which prepare.py does not read (it reads {SUPPORTED_TEXT}); unpack it first"
    suffix = compression_suffix(name)
    if suffix in UNREADABLE_SUFFIXES and content is None:
        return (f"named {suffix} ({UNREADABLE_SUFFIXES[suffix]}), which prepare.py does not read "
                f"(it reads {SUPPORTED_TEXT}); unpack it first")
    named = COMPRESSION_SUFFIXES.get(suffix)
    if named is None or named == content:
        return None  # an uncompressed name: xopen recognises compressed content by its first bytes
    if content is None:
        plain_fasta = head.lstrip()[:1] == b">"
        what = "plain-text FASTA" if plain_fasta else f"uncompressed (it starts with {head[:8]!r})"
        return f"not {named} data despite its {suffix} suffix: the file is {what}; rename or compress it"
    return f"not {named} data despite its {suffix} suffix: the file is {content}-compressed; rename it"
