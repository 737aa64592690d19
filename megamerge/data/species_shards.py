"""Reading one species' samples out of a shard that holds several (species_mixing.py's sub-streams).

A sub-stream keeps only its species' samples, so it walks past most of a mixed shard. Walking with
webdataset (Python's tarfile) parses every member header in full, about 0.4 ms each, which made
that walk, not the samples kept, the cost of species mixing. Here the walk reads each 512-byte
header, takes the name and size from their fixed fields, checks the header checksum, reads the
small `.json` member to learn the species, and seeks past the `.seq` payloads of other species
without reading them. The shards are plain ustar archives (data_prep's shard writer); a member of
any other kind, a bad checksum or a short read is damage, reported once like read_shard's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from megamerge.data.shards import RawSample, ShardEntry, check_sample

BLOCK = 512
_REGULAR = (b"0", b"\0")


class _Damaged(Exception):
    pass


def _octal(field: bytes, what: str) -> int:
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise _Damaged(f"unreadable tar header {what} {field!r}") from None


def _members(handle) -> Iterator[tuple[str, int, int]]:
    """(name, payload offset, payload size) of each member, in order, up to the end marker."""
    offset = 0
    while True:
        handle.seek(offset)
        header = handle.read(BLOCK)
        if len(header) < BLOCK:
            raise _Damaged(f"truncated at byte {offset} (no end-of-archive marker)")
        if header.count(0) == BLOCK:
            return
        if _octal(header[148:156], "checksum") != sum(header[:148]) + 8 * ord(" ") + sum(header[156:]):
            raise _Damaged(f"tar header checksum mismatch at byte {offset}")
        if header[156:157] not in _REGULAR:
            raise _Damaged(f"tar member of type {header[156:157]!r} at byte {offset} (plain files only)")
        size = _octal(header[124:136], "size")
        yield header[:100].split(b"\0", 1)[0].decode("utf-8", "replace"), offset + BLOCK, size
        offset += BLOCK + -(-size // BLOCK) * BLOCK


def _samples(handle) -> Iterator[tuple[str, dict[str, tuple[int, int]]]]:
    """(key, {suffix: (offset, size)}) per sample: consecutive members sharing a key."""
    key, members = None, {}
    for name, offset, size in _members(handle):
        stem, _, suffix = name.partition(".")
        if stem != key and members:
            yield key, members
            members = {}
        key = stem
        members[suffix] = (offset, size)
    if members:
        yield key, members


def _read(handle, where: tuple[int, int]) -> bytes:
    offset, size = where
    handle.seek(offset)
    payload = handle.read(size)
    if len(payload) < size:
        raise _Damaged(f"truncated inside the member at byte {offset}")
    return payload


def read_species_shard(entry: ShardEntry, species: str, part: int, parts: int,
                       on_corrupt: Callable[[ShardEntry, str], None]) -> Iterator[RawSample]:
    """The samples of `species` number `part`, `part + parts`, ... (counted among that species'
    samples) of a shard; damage is reported once, then the shard ends."""
    error, index, kept = None, -1, -1
    try:
        with open(entry.path, "rb") as handle:
            for index, (key, members) in enumerate(_samples(handle)):
                raw_meta = _read(handle, members["json"]) if "json" in members else b""
                try:
                    meta = json.loads(raw_meta)
                except ValueError:
                    meta = None
                if isinstance(meta, dict) and meta.get("species") != species:
                    continue
                kept += 1
                if kept % parts != part:
                    continue
                sample = {"__key__": key, "json": raw_meta} if "json" in members else {"__key__": key}
                if "seq" in members:
                    sample["seq"] = _read(handle, members["seq"])
                problem = check_sample(sample)
                if problem:
                    error = f"sample {key!r}: {problem}"
                    break
                yield RawSample(key, sample["seq"], meta)
    except (_Damaged, OSError) as e:
        error = f"{type(e).__name__}: {e}" if isinstance(e, OSError) else str(e)
    if error is None and index + 1 != entry.samples:
        error = f"holds {index + 1} samples, the manifest lists {entry.samples}"
    if error is not None:
        on_corrupt(entry, error)
