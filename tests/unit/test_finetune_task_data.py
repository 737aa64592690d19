"""Task directories for tools/finetune.py: formats, task-type detection, batching, and a clear error
naming the file, row and column for every kind of bad input, raised before any training."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megamerge.finetune.task_data import (
    TaskDataError,
    collate,
    eval_batches,
    length_bucketed_batches,
    load_task,
)
from megamerge.vocabulary import IGNORE_INDEX, PAD
from tests.unit.finetune_tasks import micro_mergedna, write_rows
from tools.finetune import main

GOOD = [("ACGTACGT", 0), ("GGCCA", 1), ("ttgan", 1), ("ACG", 0)]


def task(tmp_path, train=GOOD, dev=GOOD, test=GOOD, suffix=".csv", header=("sequence", "label")):
    for split, rows in (("train", train), ("dev", dev), ("test", test)):
        if rows is not None:
            write_rows(tmp_path / f"{split}{suffix}", rows, header)
    return tmp_path


def test_gue_csv_tsv_and_parquet_read_alike(tmp_path):
    a = load_task(task(tmp_path / "csv"))
    b = load_task(task(tmp_path / "tsv", suffix=".tsv"))
    for split in ("train", "dev", "test"):
        table = pa.table({"sequence": [r[0] for r in GOOD], "label": [r[1] for r in GOOD]})
        (tmp_path / "pq").mkdir(exist_ok=True)
        pq.write_table(table, tmp_path / "pq" / f"{split}.parquet")
    c = load_task(tmp_path / "pq")
    for data in (a, b, c):
        assert data.task_type == "classification" and data.classes == [0, 1]
        assert data.train.lengths.tolist() == [8, 5, 5, 3]
        assert data.train.labels.tolist() == [0, 1, 1, 0]
        assert bytes(data.train.ids[2]).hex() == bytes([3, 3, 2, 0, 4]).hex()  # lower case, N kept


def test_task_type_detection_and_label_encodings(tmp_path):
    named = [("ACGT", "promoter"), ("ACGA", "enhancer"), ("AC", "promoter")]
    data = load_task(task(tmp_path / "names", named, named, named))
    assert data.classes == ["enhancer", "promoter"] and data.train.labels.tolist() == [1, 0, 1]
    reg = [("ACGT", "0.5"), ("ACGA", "-1.25"), ("AC", "3")]
    data = load_task(task(tmp_path / "reg", reg, reg, reg))
    assert data.task_type == "regression" and data.train.labels.dtype == np.float32
    per_base = [("ACGT", "0110"), ("ACG", "001"), ("AC", "10")]
    data = load_task(task(tmp_path / "pb", per_base, per_base, per_base))
    assert data.task_type == "per_base" and data.num_outputs == 2
    assert data.train.labels[0].tolist() == [0, 1, 1, 0]
    # Parquet list columns, with -100 for an unlabelled base.
    (tmp_path / "pql").mkdir()
    for split in ("train", "dev", "test"):
        pq.write_table(pa.table({"sequence": ["ACGT", "GGA"], "label": [[0, 2, -100, 2], [2, 0, 0]]}),
                       tmp_path / "pql" / f"{split}.parquet")
    data = load_task(tmp_path / "pql")
    assert data.task_type == "per_base" and data.classes == [0, 2]
    assert data.train.labels[0].tolist() == [0, 1, IGNORE_INDEX, 1]
    # Overridable column names.
    data = load_task(task(tmp_path / "cols", header=("seq", "y")), sequence_column="seq", label_column="y")
    assert len(data.train) == 4


def test_collate_right_pads_and_batches_group_lengths(tmp_path):
    data = load_task(task(tmp_path))
    ids, labels = collate(data.train, np.array([3, 0]), "classification")
    assert ids.shape == (2, 8) and (ids[0, 3:] == PAD).all() and (ids[1] != PAD).all()
    assert labels.tolist() == [0, 0]
    lengths = np.random.default_rng(0).integers(10, 500, size=1000)
    batches = length_bucketed_batches(lengths, 32, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))  # an epoch sees every row once
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.2 * np.ptp(lengths)  # sorted pools: little padding
    again = length_bucketed_batches(lengths, 32, np.random.default_rng(1))
    assert all(np.array_equal(x, y) for x, y in zip(batches, again, strict=True))
    fixed = eval_batches(lengths, 64)
    assert sorted(np.concatenate(fixed).tolist()) == list(range(1000))


BAD_INPUTS = [
    # (what to write, expected message)
    ({"train": [("ACGT", 0), ("ACXT", 1), ("AC", 1)]},
     r"train.csv: row 2 \(line 3\), column 'sequence': invalid base 'X' at offset 2"),
    ({"dev": None}, r"no dev split \(expected one of dev.csv, dev.tsv, dev.parquet\)"),
    ({"train": [("ACGT", 1), ("GG", 1), ("ACG", 1)]}, r"train.csv: column 'label' has a single class \(1\)"),
    ({"test": []}, r"test.csv: no data rows"),
    ({"train": [("ACGT", 0), ("", 1), ("AC", 1)]},
     r"train.csv: row 2 \(line 3\), column 'sequence': empty sequence"),
    ({"dev": [("ACGT", 0), ("GG", 2), ("AC", 1)]},
     r"dev.csv: row 2 \(line 3\), column 'label': label '2' never occurs in train"),
]


@pytest.mark.parametrize("change,message", BAD_INPUTS, ids=["char", "split", "one-class", "no-rows",
                                                             "empty-seq", "unseen-label"])
def test_bad_input_names_file_row_and_column(tmp_path, change, message):
    rows = {"train": GOOD, "dev": GOOD, "test": GOOD, **change}
    with pytest.raises(TaskDataError, match=message):
        load_task(task(tmp_path, **rows))


def test_more_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    task(tmp_path / "empty")
    (tmp_path / "empty" / "train.csv").write_text("")
    with pytest.raises(TaskDataError, match=r"train.csv: empty file"):
        load_task(tmp_path / "empty")
    with pytest.raises(TaskDataError,
                       match=r"train.csv: no column 'label' in the header \['sequence', 'y'\]"):
        load_task(task(tmp_path / "col", header=("sequence", "y")))
    per_base = [("ACGT", "0110"), ("ACG", "001"), ("AC", "10")]
    short = [("ACGT", "0110"), ("ACG", "01"), ("AC", "10")]
    with pytest.raises(TaskDataError, match=r"test.csv: row 2 \(line 3\), column 'label': 2 per-base labels "
                                            r"for a sequence of 3 bases"):
        load_task(task(tmp_path / "pb", per_base, per_base, short), task_type="per_base")
    with pytest.raises(TaskDataError, match=r"train.csv: row 1 \(line 2\), column 'label': regression label "
                                            r"'high' is not a finite number"):
        load_task(task(tmp_path / "reg", [("AC", "high"), ("GG", "1.5")]), task_type="regression")
    task(tmp_path / "two")
    write_rows(tmp_path / "two" / "train.tsv", GOOD)
    with pytest.raises(TaskDataError, match=r"more than one train file \(train.csv, train.tsv\)"):
        load_task(tmp_path / "two")


def test_cli_refuses_bad_input_before_training(tmp_path, capsys):
    model = micro_mergedna(tmp_path / "model")
    bad = task(tmp_path / "bad", train=[("ACGT", 0), ("ACGU", 1), ("A", 1)])
    out = tmp_path / "out"
    assert main(["--model", str(model), "--task", str(bad), "--out", str(out), "--method", "probe"]) == 2
    err = capsys.readouterr().err
    assert ("finetune.py: error:" in err
            and "train.csv: row 2 (line 3), column 'sequence': invalid base 'U'" in err)
    assert not out.exists()  # nothing trained, nothing written
    good = task(tmp_path / "good")
    for flags, message in ((["--seeds", "0,0"], "no repeats"),
                           (["--pooling", "last"], "--pooling last is for CARMANIA"),
                           (["--target-modules", "wq", "qkv"], "--target-modules ['qkv']"),
                           (["--epochs", "0"], "--epochs 0 must be >= 1")):
        assert main(["--model", str(model), "--task", str(good), "--out", str(out), "--method", "probe",
                     *flags]) == 2, flags
        assert message in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "nowhere"), "--task", str(good), "--out", str(out)]) == 2
    assert "is not a megamerge portable model directory" in capsys.readouterr().err
