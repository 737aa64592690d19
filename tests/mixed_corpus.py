"""A small prepared corpus written directly (plain tarfile, no data_prep run): species of very
different sizes in shared shards, soft-masked bases (SOFTMASK_BIT) and a manifest whose shard
entries list `samples_by_species`, as data_prep/prepare.py writes them. Used by the species-mixing
and soft-mask tests and by benchmarks/bench_species_mixing.py.

Two layouts: `mix=None` puts every sample in a random one of `shards` shards (each shard holds
every species: the worst case for per-species reading); `mix=M` writes the species one after the
other into M open shards of `samples_per_shard`, as prepare.py's shard writer does, so a shard
holds the few species written while it was open."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zlib
from pathlib import Path

import numpy as np

from megamerge.data.shards import MANIFEST_FORMAT, SOFTMASK_BIT


def sample_bytes(rng: np.random.Generator, length: int, softmask_share: float) -> bytes:
    """Random A/C/G/T codes, one run of `softmask_share` of them soft-masked."""
    codes = rng.integers(0, 4, length, dtype=np.uint8)
    masked = int(length * softmask_share)
    if masked:
        start = int(rng.integers(0, length - masked + 1))
        codes[start : start + masked] |= SOFTMASK_BIT
    return codes.tobytes()


def _member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o444
    tar.addfile(info, io.BytesIO(payload))


def _assign(species_samples: dict[str, int], shards: int, mix: int | None, samples_per_shard: int,
            rng: np.random.Generator) -> list[list[str]]:
    """The species of each sample, per shard."""
    if mix is None:
        order = [species for species, count in species_samples.items() for _ in range(count)]
        rows: list[list[str]] = [[] for _ in range(shards)]
        for species in (order[i] for i in rng.permutation(len(order))):
            rows[int(rng.integers(shards))].append(species)
        return rows
    closed: list[list[str]] = []
    open_shards: list[list[str] | None] = [None] * mix
    for species, count in species_samples.items():
        for _ in range(count):
            slot = int(rng.integers(mix))
            shard = open_shards[slot] if open_shards[slot] is not None else []
            shard.append(species)
            open_shards[slot] = shard
            if len(shard) >= samples_per_shard:
                closed.append(shard)
                open_shards[slot] = None
    return closed + [shard for shard in open_shards if shard]


def write_mixed_corpus(out: Path, species_samples: dict[str, int], seq_len: int = 64, shards: int = 4,
                       softmask_share: float = 0.25, seed: int = 0, valid_samples: int = 0,
                       mix: int | None = None, samples_per_shard: int = 2048) -> Path:
    """`species_samples[s]` train samples of species s in shards laid out as the module docstring
    says (and `valid_samples` of the first species in one valid shard). Returns `out`."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    split_rows = {"train": _assign(species_samples, shards, mix, samples_per_shard, rng),
                  "valid": [[next(iter(species_samples))] * valid_samples] if valid_samples else []}
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
