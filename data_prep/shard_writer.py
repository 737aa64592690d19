"""Writing WebDataset tar shards for one split.

Each sample is two tar members sharing a key, RECORD-START: the record's key in the corpus (prepare.py:
its GROUP-INDEX in genomes.zarr) and the chunk's start, zero-padded to 10 digits. A key names its sample
whatever order samples are written in, so it is the same in a one-process run and in a corpus
prepared in parts (data_prep/merge_parts.py), and unique in the corpus: the loader seeds each
sample's crop and reverse-complement draws from it.
    KEY.seq   the chunk as uint8 tokenizer codes (A=0 C=1 G=2 T=3 N=4), one byte per base, OR-ed with
              0x08 (data_prep.normalize.SOFTMASK_BIT) where the input was lower case;
    KEY.json  {"species", "record", "record_index", "source", "array", "start", "length", "crc32"}
where "array" is the record's path in genomes.zarr and "crc32" the zlib CRC of the .seq bytes, which
the loader checks to catch corruption that tar headers do not.

Chunks arrive in genome order (one species, one record at a time). Writing them straight into
consecutive shards would make every shard single-species, which a shuffle buffer cannot undo, so
`mix` shards stay open at once and each sample goes to a seeded random one of them. Members get
fixed owner/mtime fields: the same input gives byte-identical shards and the same sha256.
"""

from __future__ import annotations

import hashlib
import json
import random
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class ShardInfo:
    path: str  # relative to the output directory
    split: str
    samples: int
    bytes: int
    sha256: str
    samples_by_species: dict[str, int]  # lets the loader weight species without opening the shard


def _header_template() -> bytes:
    info = tarfile.TarInfo("x")
    info.mode, info.mtime, info.size = 0o444, 0, 0
    return info.tobuf(format=tarfile.USTAR_FORMAT)


_TEMPLATE = _header_template()
_NAME, _SIZE, _CHECKSUM = slice(0, 100), slice(124, 136), slice(148, 156)
# The checksum is the byte sum of the header with its own field counted as spaces. Everything but the
# name and size fields is fixed, so their contribution is summed once here.
_FIXED_SUM = (
    sum(_TEMPLATE) - sum(_TEMPLATE[_NAME]) - sum(_TEMPLATE[_SIZE]) - sum(_TEMPLATE[_CHECKSUM]) + 8 * ord(" ")
)
_MODE_TO_MTIME, _MTIME, _TYPE_ONWARDS = _TEMPLATE[100:124], _TEMPLATE[136:148], _TEMPLATE[156:]
_PADDING = bytes(tarfile.BLOCKSIZE)
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))  # one encoder, not one per json.dumps call


def ustar_header(name: bytes, size: int) -> bytes:
    """What tarfile.TarInfo.tobuf makes for a plain read-only file, built in about a microsecond
    instead of ~50 (tarfile's generic path dominates shard writing at 10^4 samples/s)."""
    if len(name) > 100:
        raise ValueError(f"tar member name too long: {name!r}")
    size_field = b"%011o\0" % size
    checksum = _FIXED_SUM + sum(name) + sum(size_field)
    return b"".join(
        (
            name,
            bytes(100 - len(name)),
            _MODE_TO_MTIME,
            size_field,
            _MTIME,
            b"%06o\0 " % checksum,
            _TYPE_ONWARDS,
        )
    )


def sample_members(key: bytes, seq: bytes, meta: bytes) -> bytes:
    """KEY.seq and KEY.json as tar members (each a header, its payload and the zero padding up to
    the next 512-byte block), joined once: the per-sample path of a draft assembly's 10^5 samples."""
    return b"".join(
        (
            ustar_header(key + b".seq", len(seq)),
            seq,
            _PADDING[: -len(seq) % tarfile.BLOCKSIZE],
            ustar_header(key + b".json", len(meta)),
            meta,
            _PADDING[: -len(meta) % tarfile.BLOCKSIZE],
        )
    )


class _OpenShard:
    def __init__(self, path: Path):
        self.path = path
        # A 1 MiB buffer: one write system call per ~200 samples of 4 kb, not one per sample.
        self.file = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - open across many add() calls, closed by close()
        self.digest = hashlib.sha256()  # hashed as written: the shard is never read back
        self.bytes = 0
        self.samples = 0
        self.samples_by_species: dict[str, int] = {}

    def add(self, key: bytes, seq: bytes, meta: bytes, species: str) -> None:
        self._write(sample_members(key, seq, meta))  # one write, not six
        self.samples += 1
        self.samples_by_species[species] = self.samples_by_species.get(species, 0) + 1

    def close(self) -> None:
        self._write(bytes(2 * tarfile.BLOCKSIZE))  # end-of-archive marker
        self.file.close()

    def _write(self, data: bytes) -> None:
        self.file.write(data)
        self.digest.update(data)
        self.bytes += len(data)


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


class SplitShardWriter:
    def __init__(self, out_dir: Path, split: str, samples_per_shard: int, mix: int = 16, seed: int = 0):
        if samples_per_shard < 1 or mix < 1:
            raise ValueError("samples_per_shard and mix must be positive")
        self.root = out_dir
        self.split = split
        self.samples_per_shard = samples_per_shard
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        self._slots: list[_OpenShard | None] = [None] * mix
        self._rng = random.Random(f"{seed}/{split}")
        self._next_shard = 0
        self.shards: list[ShardInfo] = []

    def write_chunks(self, codes: np.ndarray, starts: list[int], lengths: list[int], meta: dict,
                     record_key: str) -> None:
        """The chunks codes[start : start + length] of one record, in order, each as a sample keyed
        `record_key`-START whose JSON is `dict(meta, start=, length=, crc32=)` in compact form; the
        record's part of that JSON is encoded once. `record_key` must be unique in the corpus."""
        # json.dumps of the record's fields, minus the closing brace: the per-chunk fields follow.
        prefix = _COMPACT_JSON.encode(meta).encode()[:-1] + (b"," if meta else b"")
        key_prefix = f"{record_key}-".encode("ascii")
        species = meta.get("species", "")
        for start, length in zip(starts, lengths):
            seq = codes[start : start + length].tobytes()
            slot = self._rng.randrange(len(self._slots))
            shard = self._slots[slot] or self._open(slot)  # lazily: a small split leaves no empty shard
            suffix = b'"start":%d,"length":%d,"crc32":%d}' % (start, len(seq), zlib.crc32(seq))
            shard.add(key_prefix + b"%010d" % start, seq, prefix + suffix, species)
            if shard.samples >= self.samples_per_shard:
                self._close(slot)

    def _open(self, slot: int) -> _OpenShard:
        shard = _OpenShard(self.root / self.split / shard_name(self._next_shard))
        self._slots[slot] = shard
        self._next_shard += 1
        return shard

    def _close(self, slot: int) -> None:
        shard = self._slots[slot]
        self._slots[slot] = None
        shard.close()
        self.shards.append(
            ShardInfo(
                path=str(shard.path.relative_to(self.root)),
                split=self.split,
                samples=shard.samples,
                bytes=shard.bytes,
                sha256=shard.digest.hexdigest(),
                samples_by_species=dict(sorted(shard.samples_by_species.items())),
            )
        )

    def close(self) -> list[ShardInfo]:
        for slot in range(len(self._slots)):
            if self._slots[slot] is not None:
                self._close(slot)
        return sorted(self.shards, key=lambda s: s.path)
