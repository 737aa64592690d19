"""End to end on synthetic genomes: FASTA -> store -> shards -> manifest, re-cuts from the store."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from data_prep.chunking import DROP_REASONS
from data_prep.genome_store import GenomeStore
from data_prep.normalize import MASKED_CODES
from data_prep.synthetic import REGION_TYPES
from tests.data_helpers import read_shards, reference_fasta_counts, run_prepare
from tests.helpers import REPO


def _assert_balanced(stats: dict) -> None:
    assert set(stats["dropped_bases"]) == set(DROP_REASONS)
    assert stats["input_bases"] == stats["kept_bases"] + sum(stats["dropped_bases"].values())


def _covered(intervals: list[tuple[int, int]]) -> int:
    covered, reach = 0, 0
    for start, end in sorted(intervals):
        covered += max(0, end - max(start, reach))
        reach = max(reach, end)
    return covered


def test_synthetic_generator_writes_annotated_genomes(synthetic_genomes):
    truth = json.loads((synthetic_genomes / "synthetic.json").read_text())
    assert len(truth["species"]) == 3
    gcs = [info["gc"] for info in truth["species"].values()]
    assert len(set(gcs)) == 3  # species differ in their statistics
    for name, info in truth["species"].items():
        fasta = reference_fasta_counts(synthetic_genomes / f"{name}.fa.gz")
        assert fasta["bp"] == 60_000 and fasta["records"] == 3
        assert set(info["bases_by_type"]) == set(REGION_TYPES) and all(info["bases_by_type"].values())
        rows = [line.split("\t") for line in (synthetic_genomes / f"{name}.bed").read_text().splitlines()[1:]]
        seqs = dict(zip(fasta["ids"], fasta["seqs"]))
        ends: dict[str, int] = {}
        for record, start, end, kind, detail in rows:
            start, end = int(start), int(end)
            assert ends.get(record, 0) == start  # regions tile each record without gaps
            ends[record] = end
            piece = seqs[record][start:end]
            if kind == "gap":
                assert set(piece) == {ord("N")}
            elif kind in ("tandem_repeat", "low_complexity"):
                assert piece.islower()  # soft-masked like RepeatMasker output
                if kind == "low_complexity":
                    assert set(piece.upper()) <= set(detail.split("=")[1].encode())
            else:
                assert piece.isupper()
        assert ends == {rid: len(seq) for rid, seq in seqs.items()}
        assert sum(info["bases_by_type"].values()) == 60_000
    again = synthetic_genomes.parent / "again"
    from data_prep.synthetic import generate

    generate(again, species=3, length=60_000, records=3, seed=1, compress=True, progress=False)
    for path in synthetic_genomes.glob("*.fa.gz"):  # same seed, same genomes
        assert gzip.decompress(path.read_bytes()) == gzip.decompress((again / path.name).read_bytes())


def test_manifest_accounting_and_shards_match_the_input(synthetic_genomes, synthetic_corpus):
    manifest = json.loads((synthetic_corpus / "manifest.json").read_text())
    assert manifest["megamerge_version"] and manifest["parameters"]["seq_len"] == 512
    for stats in [*manifest["species"].values(), manifest["totals"]]:
        _assert_balanced(stats)
    assert manifest["totals"]["dropped_bases"]["n_fraction"] > 0  # the synthetic gaps exercise it

    samples = read_shards(synthetic_corpus)
    by_species: dict[str, list] = {}
    for meta, seq in samples:
        by_species.setdefault(meta["species"], []).append((meta, seq))
    for species, stats in manifest["species"].items():
        fasta = reference_fasta_counts(synthetic_genomes / f"{species}.fa.gz")
        assert stats["input_bases"] == fasta["bp"] and stats["lower_bases"] == fasta["lower"]
        assert stats["n_bases"] == fasta["N"] and stats["records"] == fasta["records"]
        record_seqs = dict(zip(fasta["ids"], fasta["seqs"]))
        intervals: dict[str, list] = {}
        for meta, seq in by_species[species]:
            original = record_seqs[meta["record"]][meta["start"] : meta["start"] + meta["length"]]
            codes = np.frombuffer(seq, np.uint8)
            assert seq == MASKED_CODES[np.frombuffer(original, np.uint8)].tobytes()  # codes | soft-mask bit
            assert np.array_equal((codes >> 3) & 1, np.frombuffer(original, np.uint8) >= ord("a"))
            assert ((codes & 7) == 4).mean() <= 0.5 and len(seq) >= 64
            intervals.setdefault(meta["record"], []).append((meta["start"], meta["start"] + len(seq)))
        # kept_bases, recomputed from what the shards actually hold
        assert stats["kept_bases"] == sum(_covered(v) for v in intervals.values())
        assert stats["samples"]["train"] == len(by_species[species])

    encoding = manifest["sequence_encoding"]
    assert encoding["softmask_bit"] == 8 and encoding["codes"] == {"A": 0, "C": 1, "G": 2, "T": 3, "N": 4}
    assert any(np.frombuffer(seq, np.uint8).max() >= 8 for _, seq in samples)  # the synthetic repeats
    listed = {s["path"]: s for s in manifest["shards"]}
    assert sum(s["samples"] for s in listed.values()) == len(samples)
    for path, shard in listed.items():  # per-shard species counts, for weighting without opening shards
        drawn: dict[str, int] = {}
        for meta, _ in samples:
            if meta["shard"] == path:
                drawn[meta["species"]] = drawn.get(meta["species"], 0) + 1
        assert shard["samples_by_species"] == drawn and sum(drawn.values()) == shard["samples"]
    for path, shard in listed.items():
        assert hashlib.sha256((synthetic_corpus / path).read_bytes()).hexdigest() == shard["sha256"]
        assert Path(path).parent.name == shard["split"] and Path(path).name.startswith("shard-")
    # shards mix species and records rather than holding one genome each
    species_per_shard: dict[str, set] = {}
    for meta, _ in samples:
        species_per_shard.setdefault(meta["shard"], set()).add(meta["species"])
    assert len(species_per_shard) == len(listed) > 4
    assert sum(len(v) > 1 for v in species_per_shard.values()) >= 4  # a 4 x 16-sample mixing window


def _expected_text(seq: bytes) -> str:
    """What the store gives back for input bases: case kept, IUPAC codes as N (of the same case)."""
    return bytes(b if b in b"ACGTNacgtn" else (ord("n") if b >= 97 else ord("N")) for b in seq).decode()


def test_genome_store_holds_records_and_attributes(synthetic_genomes, synthetic_corpus):
    root = zarr.open_group(str(synthetic_corpus / "genomes.zarr"), mode="r")
    files = root.attrs["files"]
    assert len(files) == 3 and root.attrs["sequence_encoding"]["softmask_bit"] == 8
    store = GenomeStore(synthetic_corpus / "genomes.zarr")
    for summary in files:
        fasta = reference_fasta_counts(Path(summary["source_file"]))
        sha = hashlib.sha256(Path(summary["source_file"]).read_bytes()).hexdigest()
        group = root[summary["group"]]
        assert dict(group.attrs) == summary and summary["sha256"] == sha
        assert sorted(group.array_keys()) == ["record_names", "record_table", "seq"]
        table, names = group["record_table"][:], group["record_names"][:]
        assert group["record_table"].attrs["columns"] == ["start", "stop", "n", "iupac", "lower", "invalid"]
        assert group["record_names"].attrs["columns"] == ["id", "description"]
        offsets = np.append(table[:, 0], table[-1, 1])
        assert list(names[:, 0]) == fasta["ids"] and offsets[0] == 0
        assert np.array_equal(table[:, 1] - table[:, 0], [len(seq) for seq in fasta["seqs"]])
        seq_array = group["seq"]
        assert seq_array.dtype == np.uint8 and seq_array.shape == (offsets[-1],) and seq_array.compressors
        for index, (record_id, seq) in enumerate(zip(fasta["ids"], fasta["seqs"])):
            counts = dict(zip(group["record_table"].attrs["columns"][2:], table[index, 2:].tolist()))
            assert counts["lower"] == sum(c >= 97 for c in seq) and counts["n"] == seq.upper().count(b"N")
            assert str(names[index, 1]).split()[0] == record_id
            stored = seq_array[offsets[index] : offsets[index + 1]]
            assert np.array_equal(stored, MASKED_CODES[np.frombuffer(seq, np.uint8)])
            # GenomeStore: whole records and slices as text, lower case where soft-masked
            assert store.sequence(summary["species"], record_id) == _expected_text(seq)
            assert store.sequence(summary["species"], record_id, 5, 900) == _expected_text(seq[5:900])
            assert store.sequence(summary["species"], record_id, len(seq) - 3) == _expected_text(seq[-3:])
    # Whole records in corpus order, read in blocks (what --from-store cuts from)
    records = list(store.iter_records())
    assert [r.locator for r in records] == [f"{f['group']}/{i:06d}"
                                            for f in files for i in range(f["records"])]
    for record in records:
        text = store.sequence(record.species, record.record_id)
        assert (np.array_equal(record.codes, store.codes(record.species, record.record_id))
                and len(text) == record.counts.length)


def test_genome_store_file_count_follows_genomes_not_records(tmp_path):
    """A draft assembly of many scaffolds costs a fixed handful of files, and unknown names are
    named in the error."""
    rng = np.random.default_rng(0)
    lines = []
    for index in range(3000):
        bases = rng.choice(list("ACGTacgt"), size=int(rng.integers(20, 200)))
        lines += [f">scaffold_{index} draft", "".join(bases)]
    (tmp_path / "draft.fa").write_text("\n".join(lines) + "\n")
    run_prepare("--input", tmp_path / "draft.fa", "--out", tmp_path / "out", "--seq-len", "64")
    store_dir = tmp_path / "out" / "genomes.zarr"
    # root and group zarr.json, 3 array documents, 2 record chunks, 1 seq shard
    assert sum(1 for p in store_dir.rglob("*") if p.is_file()) == 8
    store = GenomeStore(store_dir)
    expected = "".join(lines[2 * 1234 + 1])
    assert store.sequence("draft", "scaffold_1234") == expected
    with pytest.raises(KeyError, match="no record 'scaffold_x'"):
        store.sequence("draft", "scaffold_x")
    with pytest.raises(KeyError, match="no species 'other'"):
        store.sequence("other", "scaffold_1")


def test_readme_reads_the_store_with_zarr_alone(synthetic_genomes, synthetic_corpus, tmp_path):
    """The data_prep/README.md snippet, run as written in a fresh interpreter on a real store: a
    genome found by species and a record by name, with nothing but zarr and numpy."""
    readme = (REPO / "data_prep" / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    snippet = next(block for block in blocks if "record_table" in block)
    path = sorted(synthetic_genomes.glob("*.fa.gz"))[1]
    fasta = reference_fasta_counts(path)
    record_id, seq = fasta["ids"][1], fasta["seqs"][1]
    species = path.name.removesuffix(".fa.gz")
    first_line, rest = snippet.split("\n", 1)
    assert first_line.startswith("path, species, record_id = ")
    store = str(synthetic_corpus / "genomes.zarr")
    script = tmp_path / "read_store.py"
    script.write_text(f"path, species, record_id = {store!r}, {species!r}, {record_id!r}\n"
                      f"{rest}print(bases)\n")
    bases = subprocess.run([sys.executable, str(script)], check=True, capture_output=True, text=True,
                           cwd=tmp_path).stdout.strip()  # fmt: skip
    assert bases == _expected_text(seq) and any(c.islower() for c in bases)


def test_recut_from_store_equals_fresh_prepare(synthetic_genomes, synthetic_corpus, tmp_path):
    common = ["--seq-len", "300", "--overlap", "50", "--min-len", "100", "--samples-per-shard", "40"]
    recut = run_prepare("--from-store", synthetic_corpus / "genomes.zarr", "--out", tmp_path / "recut",
                        *common)
    fresh = run_prepare("--input", synthetic_genomes, "--out", tmp_path / "fresh", *common)
    assert [s["sha256"] for s in recut["shards"]] == [s["sha256"] for s in fresh["shards"]]
    assert recut["species"] == fresh["species"] and recut["totals"]["input_bases"] == 180_000
    assert not (tmp_path / "recut" / "genomes.zarr").exists()  # refers to the store, no copy
    assert Path(recut["store"]) == (synthetic_corpus / "genomes.zarr").resolve()
    for stats in [*recut["species"].values(), recut["totals"]]:
        _assert_balanced(stats)
    starts = {}
    for meta, seq in read_shards(tmp_path / "recut"):
        starts.setdefault(meta["array"], []).append(meta["start"])
        assert len(seq) <= 300
    assert all(sorted(v)[:3] == [0, 250, 500] for v in starts.values())  # stride = seq_len - overlap


def test_recut_in_place_and_validation_splits(synthetic_genomes, tmp_path):
    out = tmp_path / "corpus"
    run_prepare("--input", synthetic_genomes, "--out", out, "--seq-len", "1000",
                "--valid-species", "synth_sp01")
    store_listing = sorted(p.name for p in (out / "genomes.zarr").iterdir())
    manifest = run_prepare("--from-store", "--out", out, "--seq-len", "2000", "--valid-frac", "0.34")
    assert manifest["parameters"]["seq_len"] == 2000 and manifest["store"] == "genomes.zarr"
    assert sorted(p.name for p in (out / "genomes.zarr").iterdir()) == store_listing
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    samples = read_shards(out)
    assert max(len(seq) for _, seq in samples) == 2000
    split_of_record = {}
    for meta, _ in samples:
        split_of_record.setdefault(meta["record"], set()).add(meta["split"])
    assert all(len(v) == 1 for v in split_of_record.values())  # a record never straddles the split
    assert {next(iter(v)) for v in split_of_record.values()} == {"train", "valid"}

    held_out = run_prepare("--from-store", "--out", out, "--seq-len", "1000", "--valid-species", "synth_sp01")
    assert held_out["splits"]["valid"]["samples"] == held_out["species"]["synth_sp01"]["samples"]["valid"] > 0
    assert all(meta["species"] == "synth_sp01" for meta, _ in read_shards(out, "valid"))
    assert all(meta["species"] != "synth_sp01" for meta, _ in read_shards(out, "train"))


def test_species_map_and_cli(synthetic_genomes, tmp_path):
    mapping = tmp_path / "species.tsv"
    mapping.write_text("# file\tspecies\nsynth_sp00.fa.gz\tAlpha\nsynth_sp01\tAlpha\n")
    manifest = run_prepare("--input", synthetic_genomes, "--out", tmp_path / "m", "--species-map", mapping,
                           "--seq-len", "4096")  # fmt: skip
    assert sorted(manifest["species"]) == ["Alpha", "synth_sp02"]
    assert manifest["species"]["Alpha"]["input_bases"] == 120_000

    for script in ("prepare.py", "synthetic.py"):
        help_text = subprocess.run([sys.executable, REPO / "data_prep" / script, "--help"],
                                   capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "--out" in help_text
    # an existing output is never clobbered silently
    done = subprocess.run([sys.executable, REPO / "data_prep" / "prepare.py", "--input", synthetic_genomes,
                           "--out", tmp_path / "m", "--no-progress"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 1 and "exists" in done.stderr and "Traceback" not in done.stderr
    refused = subprocess.run([sys.executable, REPO / "data_prep" / "prepare.py", "--input", synthetic_genomes,
                              "--out", tmp_path / "w", "--workers", "0"],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert refused.returncode == 2 and "--workers must be at least 1, got 0" in refused.stderr
    assert not (tmp_path / "w").exists()


def test_parallel_ingest_gives_identical_output(synthetic_genomes, synthetic_corpus, tmp_path):
    from data_prep import prepare

    out = tmp_path / "parallel"
    argv = ["--input", str(synthetic_genomes), "--out", str(out), "--seq-len", "512", "--min-len", "64",
            "--samples-per-shard", "16", "--mix-shards", "4", "--max-n-frac", "0.5",
            "--no-progress"]  # fmt: skip
    assert prepare.main([*argv, "--workers", "2"]) == 0
    parallel = json.loads((out / "manifest.json").read_text())
    serial = json.loads((synthetic_corpus / "manifest.json").read_text())
    assert "ingest" in parallel["timing_seconds"] and "ingest_and_cut" in serial["timing_seconds"]
    assert parallel["shards"] == serial["shards"] and parallel["species"] == serial["species"]
    assert parallel["files"] == serial["files"]


def test_prepare_does_not_import_torch():
    """torch costs ~2 s of CPU to import, which at 20+ MB/s is the time to prepare 40 Mbp; the data
    tools need only megamerge.__version__, so they must not pay for it."""
    code = "import sys, data_prep.prepare; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_recut_keeps_the_recorded_split_and_the_suggested_command_does(synthetic_genomes, tmp_path):
    """Issue 25, item 4: train.py's advice on a --seq-length mismatch re-cuts with the corpus's own
    --valid-frac and --seed (the same records held out), unless a split flag overrides them."""
    import shlex

    from megamerge.training.input_checks import TrainingInputError, check_seq_length

    out = tmp_path / "corpus"
    first = run_prepare("--input", synthetic_genomes, "--out", out, "--seq-len", "1000",
                        "--valid-frac", "0.34", "--seed", "3")
    held_out = {meta["record"] for meta, _ in read_shards(out, "valid")}
    assert held_out and first["splits"]["valid"]["samples"] > 0
    with pytest.raises(TrainingInputError) as refusal:
        check_seq_length(out, first, 2000, allow_crop=False)
    suggestion = str(refusal.value).split("re-cut the corpus: ")[1].rstrip(")")
    argv = shlex.split(suggestion)
    assert argv[0] == "data_prep/prepare.py"
    recut = run_prepare(*argv[1:])  # the command as train.py says it
    assert recut["parameters"]["seq_len"] == 2000
    assert (recut["parameters"]["valid_frac"], recut["parameters"]["seed"]) == (0.34, 3)
    assert {meta["record"] for meta, _ in read_shards(out, "valid")} == held_out
    # into another directory from the store path, and with an override
    other = run_prepare("--from-store", out / "genomes.zarr", "--out", tmp_path / "c2k", "--seq-len", "2000")
    assert other["parameters"]["valid_frac"] == 0.34 and other["splits"]["valid"]["samples"] > 0
    species = run_prepare("--from-store", "--out", out, "--seq-len", "1000", "--valid-species", "synth_sp01")
    assert (species["parameters"]["valid_frac"] == 0.0
            and species["parameters"]["valid_species"] == ["synth_sp01"])
    assert species["parameters"]["seed"] == 3  # the seed is not a split flag: kept
