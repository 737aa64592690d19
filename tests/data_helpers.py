"""Helpers of the data-pipeline tests: run prepare.py in-process, read shards back with plain
tarfile, count a FASTA naively, and read the shared data's MANIFEST.md. The synthetic genome and
corpus fixtures built on them live in tests/conftest.py."""

from __future__ import annotations

import gzip
import json
import re
import tarfile
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
