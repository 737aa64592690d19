"""prepare.py on a disk that fills up mid-run (issue 19, row 10), on a real file system of a few
hundred kilobytes (a tmpfs mounted for the test: needs root, as the SLURM tests do): one line that
says the disk is full and names --out, nothing partial left on the full disk, the previous output
and the input intact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO, small_tmpfs
from tests.unit.test_fault_prepare import tree

PREPARE = [sys.executable, str(REPO / "data_prep" / "prepare.py"), "--no-progress", "--seq-len", "256"]


@pytest.fixture
def small_disk(tmp_path):
    with small_tmpfs(tmp_path / "disk", "384k") as mount:
        yield mount


def fasta(path: Path, bases: int, seed: int) -> Path:
    codes = np.random.default_rng(seed).integers(0, 4, bases)
    sequence = np.frombuffer(b"ACGT", np.uint8)[codes].tobytes()
    path.write_bytes(b">r\n" + b"\n".join(sequence[i : i + 80] for i in range(0, bases, 80)) + b"\n")
    return path


def test_full_disk_is_one_line_and_keeps_the_previous_output(small_disk, tmp_path):
    genomes = tmp_path / "genomes"
    genomes.mkdir()
    small = fasta(genomes / "small.fa", 20_000, seed=0)
    out = small_disk / "corpus"
    first = subprocess.run([*PREPARE, "--input", str(small), "--out", str(out)],
                           capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    big = fasta(genomes / "big.fa", 2_000_000, seed=1)  # ~2.5 MB of shards and store: cannot fit
    inputs, previous = tree(genomes), tree(small_disk)

    done = subprocess.run([*PREPARE, "--input", str(small), str(big), "--out", str(out), "--overwrite"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"--out {out}: cannot write the output: no space left on the device" in done.stderr
    assert "the partial output was removed" in done.stderr
    assert tree(small_disk) == previous  # no partial build left filling the disk, the old corpus untouched
    assert tree(genomes) == inputs
