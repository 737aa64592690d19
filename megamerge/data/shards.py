"""The shard list of a prepared corpus, and reading one shard's samples through webdataset.

A sample's `seq` member holds one byte per base: the base code (A=0 C=1 G=2 T=3 N=4) in the low
three bits, and SOFTMASK_BIT set where the input had the base in lower case (soft-masked repeats);
shards written before soft-masking was kept have no bit set. `split_softmask` is the one decoder
of that byte: nothing downstream of it ever sees a code >= 8.

A shard is read with webdataset's tar iterators under an error handler that records the first
failure and stops that shard, so a truncated or corrupt tar can never stall the stream. Each
sample is also checked against its metadata (both members present, length, CRC32), and a shard
that ends early is caught by comparing the sample count with the manifest. What happens then is
the caller's choice (`on_corrupt`): warn, count and move on, or raise `CorruptShardError`.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from webdataset.tariterators import tarfile_samples

from megamerge.base_codes import CODE_BITS, SOFTMASK_BIT

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "megamerge-shards"
REQUIRED_META = {"species": str, "record": str, "start": int, "length": int, "crc32": int}


class CorruptShardError(RuntimeError):
    """A shard that cannot be read completely (raised only in strict mode)."""


@dataclass(frozen=True)
class ShardEntry:
    path: str
    samples: int
    sha256: str
    # ((species, samples), ...) from the manifest; None for a manifest written before prepare.py kept it
    samples_by_species: tuple[tuple[str, int], ...] | None = None


@dataclass(frozen=True)
class RawSample:
    key: str
    seq: bytes  # one byte per base: code | SOFTMASK_BIT (split_softmask decodes it)
    meta: dict


def split_softmask(seq: bytes | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A sample's shard bytes [L] -> (base codes uint8 [L], soft-masked bool [L])."""
    raw = np.frombuffer(seq, np.uint8) if isinstance(seq, bytes) else seq
    return raw & CODE_BITS, (raw & SOFTMASK_BIT).astype(bool)


def load_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: prepare the corpus with data_prep/prepare.py first")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: not a megamerge shard manifest")
    return manifest


def split_shards(data_dir: str | Path, split: str) -> list[ShardEntry]:
    manifest = load_manifest(data_dir)
    entries = [
        ShardEntry(str(Path(data_dir) / shard["path"]), int(shard["samples"]), shard["sha256"],
                   _species_counts(shard.get("samples_by_species")))
        for shard in manifest["shards"]
        if shard["split"] == split
    ]
    if not entries:
        raise ValueError(f"{data_dir}: the manifest lists no '{split}' shards")
    return entries


def _species_counts(counts: dict | None) -> tuple[tuple[str, int], ...] | None:
    return None if counts is None else tuple(sorted((str(k), int(v)) for k, v in counts.items()))


def fingerprint(entries: list[ShardEntry] | tuple[ShardEntry, ...]) -> str:
    """Identity of a shard set, independent of where the corpus directory lives."""
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(f"{Path(entry.path).name}:{entry.samples}:{entry.sha256};".encode())
    return digest.hexdigest()[:16]


def read_shard(
    entry: ShardEntry,
    part: int,
    parts: int,
    on_corrupt: Callable[[ShardEntry, str], None],
) -> Iterator[RawSample]:
    """Samples number `part`, `part + parts`, ... of a shard; damage is reported once, then the shard
    ends (samples before the damage are still delivered)."""
    errors: list[str] = []

    def stop_shard(exn: Exception) -> bool:
        errors.append(f"{type(exn).__name__}: {exn}")
        return False  # webdataset: do not continue with this tar

    index = -1
    for index, sample in enumerate(tarfile_samples([{"url": entry.path}], handler=stop_shard)):
        if index % parts != part:
            continue
        problem = check_sample(sample)
        if problem:
            errors.append(f"sample {sample.get('__key__')!r}: {problem}")
            break
        yield RawSample(sample["__key__"], sample["seq"], json.loads(sample["json"]))
    if not errors and index + 1 != entry.samples:
        errors.append(f"holds {index + 1} samples, the manifest lists {entry.samples}")
    if errors:
        on_corrupt(entry, errors[0])


def check_sample(sample: dict) -> str | None:
    """What is wrong with a sample {"__key__", "seq", "json"}, or None."""
    if "seq" not in sample or "json" not in sample:
        return f"incomplete sample (members: {sorted(k for k in sample if not k.startswith('__'))})"
    try:
        meta = json.loads(sample["json"])
    except ValueError as exc:
        return f"unreadable metadata ({exc})"
    if (not isinstance(meta, dict)
            or not REQUIRED_META.items() <= {k: type(v) for k, v in meta.items()}.items()):
        return f"metadata lacks the fields {sorted(REQUIRED_META)}"
    if len(sample["seq"]) != meta.get("length"):
        return f"sequence has {len(sample['seq'])} bytes, metadata says {meta.get('length')}"
    if zlib.crc32(sample["seq"]) != meta.get("crc32"):
        return "CRC32 mismatch"
    return None
