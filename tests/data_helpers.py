"""Helpers of the data-pipeline tests: run prepare.py in-process, read shards back with plain
tarfile, compare a corpus prepared in parts with one run, count a FASTA naively, and read the shared
data's MANIFEST.md. The synthetic genome and
corpus fixtures built on them live in tests/conftest.py."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from data_prep import prepare
from tests.helpers import REPO

SHARED_DATA = REPO.parent / "shared" / "data"
IUPAC = b"RYSWKMBDHV"


def run_prepare(*args: str) -> dict:
    """Run prepare.py in-process (no interpreter start-up per call) and return the manifest."""
    argv = [str(a) for a in args]
    assert prepare.main([*argv, "--no-progress", "--workers", "1"]) == 0
    out = Path(argv[argv.index("--out") + 1])
    return json.loads((out / "manifest.json").read_text())


def read_shards(out_dir: Path, split: str | None = None) -> list[tuple[dict, bytes]]:
    """Every (metadata, sequence bytes) in a prepared corpus, read with plain tarfile."""
    manifest = json.loads((out_dir / "manifest.json").read_text())
    samples = []
    for shard in manifest["shards"]:
        if split and shard["split"] != split:
            continue
        with tarfile.open(out_dir / shard["path"]) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, payload in members.items():
            if name.endswith(".json"):
                meta = json.loads(payload)
                meta["split"] = shard["split"]
                meta["shard"] = shard["path"]
                samples.append((meta, members[name[: -len(".json")] + ".seq"]))
    return samples


def read_fasta_records(path: Path) -> dict[str, bytes]:
    """Record name -> sequence bytes (case kept) of a gzipped FASTA, read naively: the check of a writer."""
    records, name = {}, None
    with gzip.open(path, "rb") as handle:
        for line in handle.read().split(b"\n"):
            if line.startswith(b">"):
                name = line[1:].decode()
                records[name] = b""
            elif line:
                records[name] += line
    return records


def file_contents(directory: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under `directory`."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def keyed_samples(corpus: Path) -> dict[str, dict[str, tuple[bytes, bytes]]]:
    """split -> sample key -> (.seq bytes, .json bytes) of a prepared corpus; fails on a key seen twice."""
    samples: dict[str, dict[str, tuple[bytes, bytes]]] = {"train": {}, "valid": {}}
    for shard in json.loads((corpus / "manifest.json").read_text())["shards"]:
        with tarfile.open(corpus / shard["path"]) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, payload in members.items():
            if name.endswith(".seq"):
                key = name[: -len(".seq")]
                assert key not in samples[shard["split"]], f"{corpus}: sample key {key} twice"
                samples[shard["split"]][key] = (payload, members[f"{key}.json"])
    return samples


def assert_same_corpus(whole: Path, merged: Path) -> None:
    """A corpus prepared in parts and merged (data_prep/merge_parts.py) is the one-process run's: the
    store byte for byte, every sample's key, bytes and metadata, the accounting. Only the shard files
    holding the samples differ (each part mixes its own samples, so its last shards are partly full)."""
    assert file_contents(whole / "genomes.zarr") == file_contents(merged / "genomes.zarr")
    whole_samples = keyed_samples(whole)
    assert whole_samples == keyed_samples(merged) and whole_samples["train"]
    one, two = (json.loads((c / "manifest.json").read_text()) for c in (whole, merged))
    for field in ("species", "totals", "files", "empty_records", "duplicate_ids", "skipped_files",
                  "sequence_encoding", "store", "format", "format_version", "drop_reasons"):
        assert two[field] == one[field], field
    assert {k: v for k, v in two["parameters"].items() if k != "out"} == {
        k: v for k, v in one["parameters"].items() if k != "out"}
    for split in ("train", "valid"):
        assert two["splits"][split]["samples"] == one["splits"][split]["samples"]
        per_species = [sum((Counter(s["samples_by_species"]) for s in m["shards"] if s["split"] == split),
                           Counter())
                       for m in (one, two)]
        assert per_species[0] == per_species[1]
    for shard in two["shards"]:  # listed sizes and hashes are those of the files
        data = (merged / shard["path"]).read_bytes()
        assert len(data) == shard["bytes"] and hashlib.sha256(data).hexdigest() == shard["sha256"]


def reference_fasta_counts(path: Path) -> dict:
    """Counts from a deliberately naive parser, independent of data_prep's tables."""
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(path, "rb") as handle:
        text = handle.read().replace(b"\r", b"")
    records, seqs, current = [], [], None
    for line in text.split(b"\n"):
        if line.startswith(b">"):
            if current is not None:
                seqs.append(b"".join(current))
            records.append(line[1:].decode().split()[0] if line[1:].strip() else "")
            current = []
        elif current is not None:
            current.append(line.strip())
    if current is not None:
        seqs.append(b"".join(current))
    joined = b"".join(seqs)
    return {
        "records": len(records),
        "ids": records,
        "seqs": seqs,
        "bp": len(joined),
        "lower": sum(1 for b in joined if 97 <= b <= 122),
        "N": joined.count(b"N") + joined.count(b"n"),
        "iupac": sum(joined.count(bytes([c])) + joined.count(bytes([c + 32])) for c in IUPAC),
    }


def shared_manifest_table() -> dict[str, dict]:
    """Per-file expected numbers from shared/data/MANIFEST.md (bp, lower, N, records)."""
    rows = {}
    for line in (SHARED_DATA / "MANIFEST.md").read_text().splitlines():
        match = re.match(r"^\| ((?:genomes|bad_input)/[^ |]+) \|(.*)$", line)
        if not match:
            continue
        cells = [c.strip() for c in match.group(2).split("|")]
        rows[match.group(1)] = {
            "bytes": int(cells[0]),
            "records": int(cells[1]),
            "bp": int(cells[2]),
            "lower": int(cells[4]),
            "N": int(cells[5].split()[0]),
        }
    return rows


def require_shared(subdir: str) -> Path:
    path = SHARED_DATA / subdir
    if not path.is_dir() or not (SHARED_DATA / "MANIFEST.md").is_file():
        pytest.skip(f"shared test data not present at {path} (it lives outside the repository)")
    return path
