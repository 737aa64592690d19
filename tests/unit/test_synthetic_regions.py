"""data_prep/synthetic.py --regions-bed: every interval's bases have the property of its class, and
the intervals tile each record exactly (so they cover everything that was planted)."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from data_prep.synthetic import REGION_TYPES, main
from tests.data_helpers import read_fasta_records

SPECIES, LENGTH, RECORDS = 2, 40_000, 2


@pytest.fixture(scope="module")
def genomes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic_regions")
    assert main(["--out", str(out), "--species", str(SPECIES), "--length", str(LENGTH), "--records",
                 str(RECORDS), "--regions-bed", "--no-progress"]) == 0
    return out


def read_regions(path: Path) -> list[tuple[str, int, int, str]]:
    rows = []
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        assert len(fields) == 4, f"{path}: expected 4 BED columns, got {line!r}"
        rows.append((fields[0], int(fields[1]), int(fields[2]), fields[3]))
    return rows


def best_period_agreement(seq: bytes, max_period: int = 60) -> float:
    """max over periods p of the share of positions i with seq[i] == seq[i + p] (p <= len / 2)."""
    arr = np.frombuffer(seq.upper(), dtype=np.uint8)
    periods = range(1, min(max_period, arr.size // 2) + 1)
    return max((float((arr[p:] == arr[:-p]).mean()) for p in periods), default=0.0)


def hamming_to_nearest(seq: bytes, motifs: list[str]) -> int:
    same_length = [m.encode() for m in motifs if len(m) == len(seq)]
    assert same_length, f"no planted motif has length {len(seq)}"
    return min(sum(a != b for a, b in zip(seq, m)) for m in same_length)


def test_intervals_have_their_class_property(genomes: Path):
    truth = json.loads((genomes / "synthetic.json").read_text())
    checked = dict.fromkeys(REGION_TYPES, 0)
    for species, info in truth["species"].items():
        fasta = read_fasta_records(genomes / f"{species}.fa.gz")
        for record, start, end, kind in read_regions(genomes / f"{species}.regions.bed"):
            seq = fasta[record][start:end]
            assert len(seq) == end - start > 0
            where = f"{species} {record}:{start}-{end} {kind}"
            if kind == "gap":
                assert set(seq) == {ord("N")}, where
            elif kind == "low_complexity":
                assert seq.islower() and len(set(seq)) <= 2, where  # soft-masked, 1-2 letters
            elif kind == "tandem_repeat":
                assert seq.islower(), where
                if end - start >= 120:  # whole copies of units up to 60 bp (a record end may cut one)
                    assert best_period_agreement(seq) > 0.9, where
            elif kind == "motif":
                assert seq.isupper() and set(seq) <= set(b"ACGT"), where
                # ~8% of positions were mutated: far closer to a planted motif than chance (~3/4 of positions)
                assert hamming_to_nearest(seq, info["motifs"]) <= max(3, len(seq) // 3), where
            else:
                assert kind == "background", where
                assert seq.isupper() and set(seq) <= set(b"ACGT"), where
                if end - start >= 300:  # high entropy: no repeat unit explains it
                    assert len(set(seq)) == 4 and best_period_agreement(seq) < 0.7, where
            checked[kind] += 1
    assert all(checked.values()), f"a class was never planted: {checked}"


def test_intervals_tile_every_record_and_match_the_counts(genomes: Path):
    truth = json.loads((genomes / "synthetic.json").read_text())
    for species, info in truth["species"].items():
        fasta = read_fasta_records(genomes / f"{species}.fa.gz")
        rows = read_regions(genomes / f"{species}.regions.bed")
        bases_by_type = dict.fromkeys(REGION_TYPES, 0)
        for record, seq in fasta.items():
            own = [(s, e) for r, s, e, _ in rows if r == record]
            assert own[0][0] == 0 and own[-1][1] == len(seq), record
            assert all(e == s2 for (_, e), (s2, _) in pairwise(own)), f"{record}: gap or overlap"
        for _, start, end, kind in rows:
            bases_by_type[kind] += end - start
        assert bases_by_type == info["bases_by_type"]
        assert sum(bases_by_type.values()) == LENGTH
        # the same intervals as the detailed annotation, in the same order
        detailed = [line.split("\t")[:4]
                    for line in (genomes / f"{species}.bed").read_text().splitlines()[1:]]
        assert [[r, str(s), str(e), k] for r, s, e, k in rows] == detailed


def test_without_the_flag_no_regions_bed(tmp_path: Path):
    assert main(["--out", str(tmp_path), "--species", "1", "--length", "2000", "--records", "1",
                 "--no-progress"]) == 0
    assert not list(tmp_path.glob("*.regions.bed"))
