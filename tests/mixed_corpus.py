"""A small prepared corpus written directly (plain tarfile, no data_prep run): species of very
different sizes mixed in shards, soft-masked bases (SOFTMASK_BIT) and a manifest whose shard
entries list `samples_by_species`, as data_prep/prepare.py writes them. Used by the species-mixing
and soft-mask tests and by benchmarks/bench_species_mixing.py."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import zlib
from pathlib import Path

from megamerge.data.shards import MANIFEST_FORMAT, SOFTMASK_BIT


def sample_bytes(rng: random.Random, length: int, softmask_share: float) -> bytes:
    """Random A/C/G/T codes, a run of about `softmask_share` of them soft-masked."""
    codes = bytearray(rng.randrange(4) for _ in range(length))
    masked = int(length * softmask_share)
    if masked:
        start = rng.randrange(length - masked + 1)
        for i in range(start, start + masked):
            codes[i] |= SOFTMASK_BIT
    return bytes(codes)


def _member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o444
    tar.addfile(info, io.BytesIO(payload))


def write_mixed_corpus(out: Path, species_samples: dict[str, int], seq_len: int = 64, shards: int = 4,
                       softmask_share: float = 0.25, seed: int = 0, valid_samples: int = 0) -> Path:
    """`species_samples[s]` train samples of species s, spread at random over `shards` tar files
    (and `valid_samples` of the first species in one valid shard). Returns `out`."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    order = [species for species, count in species_samples.items() for _ in range(count)]
    rng.shuffle(order)
    split_rows = {"train": [[] for _ in range(shards)], "valid": [[]] if valid_samples else []}
    for species in order:
        split_rows["train"][rng.randrange(shards)].append(species)
    if valid_samples:
        split_rows["valid"][0] = [next(iter(species_samples))] * valid_samples
    entries, key = [], 0
    for split, shard_rows in split_rows.items():
        (out / split).mkdir(exist_ok=True)
        for number, rows in enumerate(shard_rows):
            path = out / split / f"shard-{number:06d}.tar"
            with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
                for species in rows:
                    seq = sample_bytes(rng, seq_len, softmask_share)
                    meta = {"species": species, "record": f"{species}_r{key}", "start": 0, "length": len(seq),
                            "crc32": zlib.crc32(seq)}
                    _member(tar, f"{key:010d}.seq", seq)
                    _member(tar, f"{key:010d}.json", json.dumps(meta).encode())
                    key += 1
            counts: dict[str, int] = {}
            for species in rows:
                counts[species] = counts.get(species, 0) + 1
            entries.append({"path": f"{split}/{path.name}", "split": split, "samples": len(rows),
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                            "samples_by_species": dict(sorted(counts.items()))})
    manifest = {"format": MANIFEST_FORMAT, "parameters": {"seq_len": seq_len}, "shards": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out
