"""Malformed and awkward input: every file either normalises with the right counts or stops the run
with a one-line error naming the file, and a failed run leaves nothing behind."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep import fasta_records, prepare
from data_prep.fasta import InputError, read_fasta
from tests.data_helpers import reference_fasta_counts, require_shared, run_prepare, shared_manifest_table
from tests.helpers import REPO


def _prepare_error(capsys, path: Path, out: Path, *extra: str) -> str:
    code = prepare.main(["--input", str(path), "--out", str(out), "--no-progress", "--workers", "1", *extra])
    message = capsys.readouterr().err.strip()
    assert code == 1, message
    assert "\n" not in message and message.startswith("prepare.py: error: ")
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))  # nothing partial left
    return message


def test_every_shared_bad_input_file_normalises_with_manifest_counts(tmp_path):
    bad_dir = require_shared("bad_input")
    expected = shared_manifest_table()
    files = sorted(bad_dir.iterdir())
    assert len(files) == 6
    for path in files:
        reference = reference_fasta_counts(path)
        table = expected[f"bad_input/{path.name}"]
        assert (reference["bp"], reference["lower"], reference["N"]) == (
            table["bp"], table["lower"], table["N"])
        out = tmp_path / path.name.split(".")[0]
        manifest = run_prepare("--input", path, "--out", out, "--seq-len", "1024")
        (stats,) = manifest["species"].values()
        assert stats["records"] == table["records"]
        assert stats["input_bases"] == table["bp"]
        assert stats["lower_bases"] == table["lower"]
        assert stats["n_bases"] == table["N"]
        assert stats["iupac_bases"] == reference["iupac"]
        assert stats["invalid_bases"] == 0
        assert stats["input_bases"] == stats["kept_bases"] + sum(stats["dropped_bases"].values())
        if "IUPAC" in path.name:
            assert stats["iupac_bases"] > 0
        if "softmasked" in path.name:
            assert stats["lower_bases"] > 0


def test_empty_header_record_is_kept(tmp_path):
    path = require_shared("bad_input") / "Ecoli_section2_tiny_with_empty_header.fna"
    records = list(read_fasta(path))
    assert [r.record_id for r in records][1] == "" and all(r.codes.size for r in records)
    manifest = run_prepare("--input", path, "--out", tmp_path / "o", "--seq-len", "64", "--min-len", "1",
                           "--max-n-frac", "1")  # fmt: skip
    assert manifest["totals"]["kept_bases"] == 283


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_malformed_files_fail_naming_the_file(tmp_path, capsys):
    good = gzip.compress(b">chr1\n" + b"ACGT" * 5000 + b"\n")
    cases = {
        "truncated.fa.gz": (good[: len(good) // 2], "truncated or corrupt"),
        "binary.fa": (bytes(range(256)) * 8, "binary data"),
        "header_only.fa": (b">chr1 a header and nothing else\n", "no sequence data"),
        "bare_gt.fa": (b">\n", "no sequence data"),
        "empty.fa": (b"", "empty file"),
        "empty.fa.gz": (gzip.compress(b""), "empty file"),
        "not_fasta.txt": (b"hello world\nthis is not a genome\n", "not FASTA"),
        "reads.fq": (b"@r1\nACGT\n+\nIIII\n", "not FASTA"),
        "bad_char.fa": (b">a\nACGT\n>second desc\nACGTAC\nG*T\n",
                        "record #1 'second': invalid character '*' at offset 7"),
        "space.fa": (b">a\nACGT ACGT\n", "invalid character ' ' at offset 4"),
    }  # fmt: skip
    for name, (data, reason) in cases.items():
        path = _write(tmp_path / name, data)
        message = _prepare_error(capsys, path, tmp_path / "out")
        assert str(path) in message and reason in message, message
        with pytest.raises(InputError, match=reason.replace("*", r"\*")):
            list(read_fasta(path))


def test_one_bad_file_among_good_ones_stops_the_run(tmp_path, capsys, synthetic_genomes):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in sorted(synthetic_genomes.glob("*.fa.gz")):
        (folder / path.name).write_bytes(path.read_bytes())
    bad = _write(folder / "zz_broken.fa.gz", gzip.compress(b">x\nACGT\n" * 1000)[:-20])
    message = _prepare_error(capsys, folder, tmp_path / "out")
    assert str(bad) in message
    message = _prepare_error(capsys, folder, tmp_path / "out", "--workers", "2")  # the pool path too
    assert str(bad) in message


def test_on_invalid_n_crlf_empty_records_and_duplicate_ids(tmp_path):
    path = _write(
        tmp_path / "odd.fa",
        b">r1 first\r\nACGTacgtNNRY\r\nAC*T\r\n>empty\r\n>r1 again\r\nGGGGCCCC\r\n>r2\r\n\r\n>r3\r\nTTTT\r\n",
    )
    with pytest.raises(InputError, match=r"record #0 'r1': invalid character '\*' at offset 14"):
        list(read_fasta(path))
    manifest = run_prepare("--input", path, "--out", tmp_path / "o", "--on-invalid", "n", "--seq-len", "8",
                           "--min-len", "1", "--max-n-frac", "1")  # fmt: skip
    stats = manifest["totals"]
    assert (stats["records"], stats["empty_records"], stats["duplicate_ids"]) == (5, 2, 1)
    assert (stats["input_bases"], stats["invalid_bases"], stats["iupac_bases"], stats["n_bases"]) == (
        28, 1, 2, 2)
    assert stats["lower_bases"] == 4 and stats["kept_bases"] == 28
    assert any("'r1'" in entry for entry in manifest["duplicate_ids"])
    assert len(manifest["empty_records"]) == 2


def test_cli_reports_one_line_without_traceback(tmp_path):
    path = _write(tmp_path / "bad.fa", b">a\nAC!GT\n")
    done = subprocess.run(
        [sys.executable, str(REPO / "data_prep" / "prepare.py"), "--input", str(path),
         "--out", str(tmp_path / "o")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert f"{path}: record #0 'a': invalid character '!' at offset 2" in done.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_valid_species_is_an_error(tmp_path, capsys, synthetic_genomes):
    message = _prepare_error(capsys, synthetic_genomes, tmp_path / "o", "--valid-species", "Nonexistent")
    assert "Nonexistent" in message



def _dnaio_records(data: bytes):
    """dnaio's FASTA reader on `data`: [(name, sequence)], or "error" where it refuses the text."""
    import dnaio

    try:
        with dnaio.open(io.BytesIO(data), fileformat="fasta") as reader:
            return [(record.name, record.sequence.encode()) for record in reader]
    except (dnaio.exceptions.FileFormatError, UnicodeDecodeError, ValueError):
        return "error"


def _block_records(data: bytes, block: int):
    try:
        with patch.object(fasta_records, "BLOCK", block):
            return list(fasta_records.iter_fasta(io.BytesIO(data)))
    except (fasta_records.FastaFormatError, UnicodeDecodeError):
        return "error"


_FASTA_PIECES = ["A", "c", "N", "\n", "\n", ">", "\r", "\r\n", " ", "\t", "#", "\n>", "\n\n", ">h d", "é",
                 "x"]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(_FASTA_PIECES), max_size=40), st.sampled_from(["", "\n", "  \n"]),
       st.sampled_from([1, 2, 5, 1 << 23]))  # fmt: skip
def test_block_fasta_splitter_gives_dnaios_records(pieces, prefix, block):
    """data_prep/fasta_records.py (blocks, bytes operations) gives exactly dnaio's records, names and
    refusals on any text, whatever the block boundaries; the fast path and its line-by-line
    fallback are both exercised by the odd pieces (comments, blank lines, stray CR, non-ASCII)."""
    data = (prefix + ">" + "".join(pieces)).encode()
    assert _block_records(data, block) == _dnaio_records(data)
