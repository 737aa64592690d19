"""Faults and bad input for prepare.py (issue 19, rows 1, 4, 5, 10, 11): whatever the flags, the
user's input survives byte for byte, a refused run touches nothing, and the one-line error names
the path or flag that caused it."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from data_prep import prepare
from tests.data_helpers import run_prepare
from tests.helpers import REPO

try:
    from compression import zstd  # Python >= 3.14
except ImportError:
    from backports import zstd  # xopen's own dependency on older Pythons

GENOME = b">chr1 first\nACGTTGCAACGTAGCTAGCTAGGATCGATCGATTTACG\n>chr2\nGGGATTACAGATTACAGATTACACCC\n"


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root (directories as None) with its bytes: a run may change none of it."""
    paths = sorted(root.rglob("*"))
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in paths}


def prepare_error(capsys, *argv) -> str:
    code = prepare.main([*map(str, argv), "--no-progress", "--workers", "1", "--seq-len", "16"])
    captured = capsys.readouterr()
    message = captured.err.strip()
    assert code == 1, (captured.out, message)
    assert "\n" not in message and message.startswith("prepare.py: error: "), message
    return message


@pytest.fixture
def genomes(tmp_path) -> Path:
    folder = tmp_path / "work" / "genomes"
    folder.mkdir(parents=True)
    (folder / "a.fa").write_bytes(GENOME)
    (folder / "b.fa.gz").write_bytes(gzip.compress(GENOME.replace(b"chr", b"scaf")))
    return folder


# ------------------------------------------------------------------------ row 1: the input survives


@pytest.mark.parametrize(
    ("out", "inputs", "relation"),
    [
        ("work/genomes", ["work/genomes"], "is the input"),
        ("work", ["work/genomes"], "contains the input"),
        (".", ["work/genomes"], "contains the input"),
        ("work/genomes/corpus", ["work/genomes"], "lies inside the input"),
        ("work/genomes/a.fa", ["work/genomes/a.fa"], "is the input"),
        ("work/genomes", ["work/genomes/a.fa"], "contains the input"),
        ("work/genomes", ["work/genomes/b.fa.gz", "work/other.fa"], "contains the input"),
    ],
)
@pytest.mark.parametrize("overwrite", [False, True])
def test_out_overlapping_an_input_is_refused_before_anything_is_touched(
    genomes, tmp_path, capsys, monkeypatch, out, inputs, relation, overwrite
):
    (tmp_path / "work" / "other.fa").write_bytes(GENOME)
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    message = prepare_error(capsys, "--input", *inputs, "--out", out, *(["--overwrite"] if overwrite else []))
    assert f"--out {out} {relation}" in message
    assert tree(tmp_path) == before  # not one file changed, added or removed


def test_out_through_a_symbolic_link_to_the_input_is_refused(genomes, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(genomes, target_is_directory=True)
    before = tree(genomes)
    for out in (link, link / "corpus"):
        message = prepare_error(capsys, "--input", genomes, "--out", out, "--overwrite")
        assert f"--out {out} {'is' if out == link else 'lies inside'} the input {genomes}" in message
    assert tree(genomes) == before and link.is_symlink()


def test_species_map_and_genome_store_are_inputs_too(genomes, tmp_path, capsys):
    species_map = tmp_path / "maps" / "species.tsv"
    species_map.parent.mkdir()
    species_map.write_text("a.fa\tAlpha\n")
    before = tree(tmp_path)
    message = prepare_error(capsys, "--input", genomes, "--species-map", species_map,
                            "--out", species_map.parent, "--overwrite")  # fmt: skip
    assert "contains the input" in message and str(species_map) in message
    assert tree(tmp_path) == before

    corpus = tmp_path / "corpus" / "c"
    run_prepare("--input", genomes, "--out", corpus, "--seq-len", "16")
    before = tree(tmp_path)
    for out in (tmp_path / "corpus", tmp_path):  # a re-cut whose --out holds the store it reads
        message = prepare_error(capsys, "--from-store", corpus / "genomes.zarr", "--out", out, "--overwrite")
        assert "contains the input" in message
    assert tree(tmp_path) == before


def test_overwrite_refuses_a_directory_prepare_did_not_write(genomes, tmp_path, capsys):
    foreign = tmp_path / "results"
    (foreign / "train").mkdir(parents=True)
    (foreign / "thesis.tex").write_text("three years of work\n")
    (foreign / "train" / "model.pt").write_bytes(b"weights")
    before = tree(tmp_path)
    message = prepare_error(capsys, "--input", genomes, "--out", foreign, "--overwrite")
    assert "not a previous prepare.py output" in message and "thesis.tex" in message
    (foreign / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    message = prepare_error(capsys, "--input", genomes, "--out", foreign, "--overwrite")
    assert "not a previous prepare.py output" in message
    assert tree(tmp_path) == {**before, "results/manifest.json": (foreign / "manifest.json").read_bytes()}


def test_overwrite_refuses_a_previous_output_that_holds_foreign_files(genomes, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    run_prepare("--input", genomes, "--out", corpus, "--seq-len", "16")
    (corpus / "notes.txt").write_text("mine\n")
    (corpus / "train" / "extra.tar").write_bytes(b"mine too")
    before = tree(tmp_path)
    message = prepare_error(capsys, "--input", genomes, "--out", corpus, "--overwrite")
    assert "did not write" in message and "notes.txt" in message and "train/extra.tar" in message
    # the in-place re-cut (no --overwrite needed) obeys the same rule
    message = prepare_error(capsys, "--from-store", "--out", corpus)
    assert "did not write" in message and "train/extra.tar" in message
    assert tree(tmp_path) == before


def test_overwrite_replaces_a_previous_prepare_output(genomes, tmp_path):
    corpus = tmp_path / "corpus"
    inputs = tree(genomes)
    first = run_prepare("--input", genomes, "--out", corpus, "--seq-len", "16")
    second = run_prepare("--input", genomes, "--out", corpus, "--seq-len", "8", "--overwrite")
    assert (first["parameters"]["seq_len"], second["parameters"]["seq_len"]) == (16, 8)
    assert json.loads((corpus / "manifest.json").read_text())["parameters"]["seq_len"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "work"]  # no build leftovers
    assert tree(genomes) == inputs


def test_out_that_is_a_file_or_lies_under_one_is_refused(genomes, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me\n")
    assert "exists and is not a directory" in prepare_error(capsys, "--input", genomes, "--out", blocker)
    message = prepare_error(capsys, "--input", genomes, "--out", blocker / "corpus", "--overwrite")
    assert f"{blocker} is a file, not a directory" in message
    assert blocker.read_text() == "keep me\n"


# ------------------------------------------------------------------- row 10: an unwritable --out


def test_unwritable_out_is_one_line_naming_it_without_traceback(genomes, tmp_path):
    for out in ("/proc/megamerge_corpus", "/proc/version/corpus"):
        done = subprocess.run(
            [sys.executable, str(REPO / "data_prep" / "prepare.py"), "--input", str(genomes), "--out", out,
             "--no-progress", "--seq-len", "16"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert f"--out {out}" in done.stderr


# ---------------------------------------------- row 4: every FASTA suffix and compression, skips named


def bgzip(data: bytes, block: int = 16) -> bytes:
    """BGZF as bgzip writes it: independent gzip members with the 'BC' extra field, then the
    empty end-of-file block."""
    out = b""
    for start in [*range(0, len(data), block), len(data)]:
        chunk = data[start : start + block]
        deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        raw = deflate.compress(chunk) + deflate.flush()
        header = b"\x1f\x8b\x08\x04\0\0\0\0\0\xff" + struct.pack("<H2sHH", 6, b"BC", 2, len(raw) + 25)
        out += header + raw + struct.pack("<II", zlib.crc32(chunk), len(chunk))
    return out


COMPRESSED = {
    "plain.fa": lambda d: d,
    "sub_fsa.fsa": lambda d: d,
    "upper.FASTA": lambda d: d,
    "frn.frn": lambda d: d,
    "seq.seq": lambda d: d,
    "gz.fna.gz": gzip.compress,
    "gzip.fa.gzip": gzip.compress,
    "bgzf.fa.bgz": bgzip,
    "bgzf_named_gz.ffn.gz": bgzip,
    "bz.fa.bz2": bz2.compress,
    "x.fasta.xz": lzma.compress,
    "zst.fa.zst": zstd.compress,
    "zstd.fsa.ZSTD": zstd.compress,
    "gz_unnamed.fa": gzip.compress,  # compressed content under a plain name: recognised by its bytes
}


def test_every_common_suffix_and_compression_is_read_and_skips_are_named(tmp_path, capsys):
    folder = tmp_path / "mixed"
    (folder / "nested").mkdir(parents=True)
    sequences = {}
    for i, (name, compress) in enumerate(COMPRESSED.items()):
        data = b">rec%d\n%s\n" % (i, b"ACGT"[i % 4 :] * (10 + i) + b"ACGT" * 3)
        (folder / "nested" / name if i % 2 else folder / name).write_bytes(compress(data))
        sequences[name] = len(data.split(b"\n")[1])
    for name in ("README.txt", "plain.fa.fai", "checksums.md5", ".DS_Store", "._plain.fa"):
        (folder / name).write_bytes(b"not a genome")
    assert prepare.main(["--input", str(folder), "--out", str(tmp_path / "c"), "--no-progress", "--seq-len",
                         "16", "--min-len", "1"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert sorted(f["file_name"] for f in manifest["files"]) == sorted(COMPRESSED)
    by_file = {f["file_name"]: f["counts"]["length"] for f in manifest["files"]}
    assert by_file == sequences
    skipped = manifest["skipped_files"]
    assert len(skipped) == 5
    for name, reason in [("README.txt", "not a FASTA file name"), ("plain.fa.fai", "index file"),
                         ("checksums.md5", "not a FASTA"), (".DS_Store", "hidden"), ("._plain.fa", "hidden")]:
        line = next(s for s in skipped if s.startswith(f"{folder / name}: "))
        assert reason in line, line
        assert f"skipped {line}" in printed  # named in the summary too
    species = set(manifest["species"])
    assert {"bgzf", "gzip", "zst", "zstd", "x", "upper", "seq"} <= species  # suffixes stripped from labels


def test_no_fasta_in_a_directory_names_what_was_skipped(tmp_path, capsys):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi\n")
    message = prepare_error(capsys, "--input", folder, "--out", tmp_path / "c")
    assert "no FASTA files found" in message and "notes.txt: not a FASTA file name" in message


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("plain.fa.gz", GENOME,
         "not gzip data despite its .gz suffix: the file is plain-text FASTA"),  # row 11
        ("plain.fa.bz2", GENOME, "not bz2 data despite its .bz2 suffix"),
        ("gzip.fa.bz2", gzip.compress(GENOME),
         "not bz2 data despite its .bz2 suffix: the file is gzip-compressed"),
        ("xz.fa.zst", lzma.compress(GENOME),
         "not zstd data despite its .zst suffix: the file is xz-compressed"),
        ("archive.fa.zip", b"PK\x03\x04" + bytes(40), "a zip archive, which prepare.py does not read"),
        ("zip_inside.fa", b"PK\x03\x04" + bytes(40), "a zip archive"),
        ("seven.fa.7z", b"not really", "named .7z (a 7-zip archive), which prepare.py does not read"),
        ("lz4.fa", b"\x04\x22\x4d\x18" + bytes(20), "lz4-compressed, which prepare.py does not read"),
        ("cut.fa.bz2", bz2.compress(GENOME * 50)[:60], "truncated or corrupt"),
        ("cut.fa.xz", lzma.compress(GENOME * 50)[:60], "truncated or corrupt"),
        ("cut.fa.zst", zstd.compress(GENOME * 50)[:30], "truncated or corrupt"),
        ("cut.fa.bgz", bgzip(GENOME * 5)[:-40], "truncated or corrupt"),
        # gzip alone cannot tell
        ("cut_at_block.fa.gz", bgzip(GENOME * 5)[:-28], "truncated or corrupt bgzip"),
    ],
)
def test_unreadable_compression_is_refused_by_name(tmp_path, capsys, name, data, reason):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.fa").write_bytes(GENOME)
    (folder / name).write_bytes(data)
    for given in (folder, folder / name):  # found in a directory, or given explicitly
        message = prepare_error(capsys, "--input", given, "--out", tmp_path / "c")
        assert f"{folder / name}: " in message and reason in message, message
    assert not (tmp_path / "c").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


# ------------------------------------------------------------- row 5: an empty training split says why


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--seq-len", "4096"],
         "every record is shorter than --min-len 1024 (the longest has 38 bases; --seq-len 4096)"),
        (["--seq-len", "64", "--min-len", "50"], "every record is shorter than --min-len 50"),
        (["--valid-frac", "0.99999", "--seq-len", "8"], "--valid-frac 0.99999 held out all 4 records"),
        (["--valid-species", "a", "b", "--seq-len", "8"],
         "--valid-species a b holds out every species of the corpus (a, b)"),
        (["--max-n-frac", "0.0", "--seq-len", "16", "--nmask"],
         "every chunk has an N fraction above --max-n-frac 0.0"),
    ],
)
def test_empty_training_split_is_an_error_that_says_why(genomes, tmp_path, capsys, flags, reason):
    if "--nmask" in flags:  # every 8 bases hold an N
        flags = [f for f in flags if f != "--nmask"]
        (genomes / "a.fa").write_bytes(b">n1\n" + b"ACGTNCGA" * 10 + b"\n")
        (genomes / "b.fa.gz").write_bytes(gzip.compress(b">n2\n" + b"NCGTACGA" * 10 + b"\n"))
    corpus = tmp_path / "corpus"
    run_prepare("--input", genomes, "--out", corpus, "--seq-len", "8", "--max-n-frac", "1")  # a good output
    before = tree(tmp_path)
    argv = ["--input", str(genomes), "--out", str(corpus), "--overwrite", "--no-progress", *flags]
    code = prepare.main(argv)
    message = capsys.readouterr().err.strip()
    assert code == 1 and message.startswith("prepare.py: error: no training samples: "), message
    assert reason in message, message
    assert tree(tmp_path) == before  # the previous output is kept, not replaced by an empty corpus
