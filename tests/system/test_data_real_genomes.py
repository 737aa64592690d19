"""End to end on the shared real genomes (26 files, ~29 Mbp): counts must match shared/data/MANIFEST.md."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from data_prep.genome_store import GenomeStore
from megamerge.data import build_pretrain_loader
from tests.data_helpers import read_shards, require_shared, run_prepare, shared_manifest_table


@pytest.fixture(scope="module")
def real_corpus(tmp_path_factory):
    genomes = require_shared("genomes")
    out = tmp_path_factory.mktemp("real") / "corpus"
    manifest = run_prepare("--input", genomes, "--out", out, "--seq-len", "4096", "--valid-frac", "0.05")
    return genomes, out, manifest


def test_real_genomes_counts_match_the_shared_manifest(real_corpus):
    genomes, _, manifest = real_corpus
    expected = shared_manifest_table()
    files = sorted(genomes.iterdir())
    assert len(manifest["files"]) == len(files) == 26
    for summary in manifest["files"]:
        row = expected[f"genomes/{summary['file_name']}"]
        counts = summary["counts"]
        assert (summary["records"], counts["length"], counts["lower"], counts["n"]) == (
            row["records"], row["bp"], row["lower"], row["N"]), summary["file_name"]  # fmt: skip
        assert counts["iupac"] == 0 and counts["invalid"] == 0
        assert summary["sha256"] == hashlib.sha256(Path(summary["source_file"]).read_bytes()).hexdigest()
        stats = manifest["species"][summary["species"]]
        assert stats["input_bases"] == row["bp"]  # one file per species by default
    totals = manifest["totals"]
    assert totals["input_bases"] == 28_825_586
    for stats in [*manifest["species"].values(), totals]:
        assert stats["input_bases"] == stats["kept_bases"] + sum(stats["dropped_bases"].values())
    # the 100 kb N run of the human chr22 slice is dropped for its N fraction, not kept
    human = manifest["species"]["Homo_sapiens_chr22_20000001-21000000_hisat2"]
    assert human["dropped_bases"]["n_fraction"] >= 98_000
    assert manifest["splits"]["valid"]["samples"] > 0 and manifest["splits"]["train"]["samples"] > 6000


def test_real_corpus_streams_through_the_loader(real_corpus):
    _, out, manifest = real_corpus
    valid = build_pretrain_loader(out, "valid", micro_batch=16, num_workers=0, with_meta=True)
    seen = [(m["array"], m["start"]) for _, meta in valid for m in meta]
    assert len(seen) == len(set(seen)) == manifest["splits"]["valid"]["samples"]
    on_disk = {(m["array"], m["start"]) for m, _ in read_shards(out, "valid")}
    assert set(seen) == on_disk


def test_real_genomes_read_back_exactly_from_the_store(real_corpus):
    """Every record of every real genome, case included, comes back from the store as it is in the
    input, and a genome costs a fixed handful of store files whatever its record count."""
    _, out, manifest = real_corpus
    store = GenomeStore(out / "genomes.zarr")
    for summary in manifest["files"]:
        with gzip.open(summary["source_file"], "rt") as handle:
            records = [(r.split("\n", 1)[0].split(maxsplit=1)[0], r.split("\n", 1)[1].replace("\n", ""))
                       for r in handle.read().split(">")[1:]]  # fmt: skip
        for record_id, bases in records:
            assert store.sequence(summary["species"], record_id) == bases, (summary["file_name"], record_id)
        group_dir = out / "genomes.zarr" / summary["group"]
        assert sum(1 for p in group_dir.rglob("*") if p.is_file()) <= 11, summary["file_name"]
