"""Reading DNA sequences from a CSV with a `sequence` column (GUE's train / dev / test.csv: sequence,label).

Each row's sequence is normalised as FASTA text is (data_prep/normalize.py): A/C/G/T/N in either case,
IUPAC ambiguity codes become N, lower case keeps the soft-mask bit. Every failure is an `InputError`
naming the file, and the row (counted from 1 over data rows, as tools/finetune.py counts them) with
its line in the file (the header is line 1; a quoted field may span lines).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.fasta import InputError
from data_prep.normalize import InvalidBaseError, normalize

SEQUENCE_COLUMN = "sequence"


def read_sequence_csv(path: Path) -> Iterator[tuple[int, np.ndarray, dict[str, str]]]:
    """Yield (0-based data row, uint8 codes [n] with the soft-mask bit, the row's cells by column)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or SEQUENCE_COLUMN not in reader.fieldnames:
            raise InputError(f"{path}: CSV input needs a '{SEQUENCE_COLUMN}' column (GUE format: "
                             f"sequence,label); its header is {reader.fieldnames or []}")
        for row_number, row in enumerate(reader):
            where = f"{path}: row {row_number + 1} (line {reader.line_num})"
            text = (row[SEQUENCE_COLUMN] or "").strip()
            if not text:
                raise InputError(f"{where}: empty sequence")
            try:
                codes, _ = normalize(text.encode("ascii", "replace"))
            except InvalidBaseError as e:
                raise InputError(f"{where}: {e}") from None
            yield row_number, codes, row
