"""A supervised task directory: train / dev / test files, read, checked and encoded before any training.

    TASK_DIR/train.{csv,tsv,parquet}   header with a sequence column and a label column
    TASK_DIR/dev.{csv,tsv,parquet}     (GUE's layout works as is: sequence,label)
    TASK_DIR/test.{csv,tsv,parquet}

Labels decide the task type (`--task-type auto`):
* a list (Parquet list column) or a string of one digit per base, as long as the sequence: per-base
  classification (a list may use -100 for "no label" at a base);
* integers, or any non-numeric strings: sequence classification (classes are those of train,
  sorted; a dev or test label train never saw is an error);
* other numbers: regression.

Every problem (missing split, empty file, missing column, a character that is not A/C/G/T/N, a label
column with one class, a per-base label of the wrong length) is a TaskDataError naming the file,
the row (1-based data row; `line` counts the header too) and the column.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from megamerge.vocabulary import IGNORE_INDEX, PAD, encode

SPLITS = ("train", "dev", "test")
SUFFIXES = (".csv", ".tsv", ".parquet")
TASK_TYPES = ("classification", "regression", "per_base")


class TaskDataError(ValueError):
    pass


@dataclass
class RawSplit:
    name: str
    path: Path
    sequences: list[str]
    labels: list  # raw cell values, one per row

    def where(self, row: int, column: str) -> str:
        """'file: row r (line l), column c' for the 0-based row index `row`."""
        line = "" if self.path.suffix == ".parquet" else f" (line {row + 2})"
        return f"{self.path}: row {row + 1}{line}, column {column!r}"


@dataclass
class TaskSplit:
    """One split, encoded: ids[i] uint8 [n_i]; labels is int64 [S] (classification), float32 [S]
    (regression) or a list of int64 [n_i] arrays (per-base, IGNORE_INDEX where unlabelled)."""

    name: str
    path: Path
    ids: list[np.ndarray]
    labels: np.ndarray | list[np.ndarray]
    lengths: np.ndarray = field(init=False)

    def __post_init__(self):
        self.lengths = np.array([len(x) for x in self.ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class TaskData:
    name: str
    task_type: str
    classes: list  # class labels as read (classification, per-base); [] for regression
    train: TaskSplit
    dev: TaskSplit
    test: TaskSplit

    @property
    def num_outputs(self) -> int:
        return 1 if self.task_type == "regression" else len(self.classes)

    def split(self, name: str) -> TaskSplit:
        return getattr(self, name)


# ------------------------------------------------------------------------------------ reading
def find_split_file(task_dir: Path, split: str) -> Path:
    found = [task_dir / f"{split}{suffix}" for suffix in SUFFIXES
             if (task_dir / f"{split}{suffix}").is_file()]
    if not found:
        names = ", ".join(f"{split}{s}" for s in SUFFIXES)
        raise TaskDataError(f"{task_dir}: no {split} split (expected one of {names})")
    if len(found) > 1:
        raise TaskDataError(f"{task_dir}: more than one {split} file "
                            f"({', '.join(p.name for p in found)}); keep one")
    return found[0]


def _read_text_table(path: Path, columns: tuple[str, str]) -> list[tuple]:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path, newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise TaskDataError(f"{path}: empty file (expected a header with columns {list(columns)})")
        header = [h.strip() for h in header]
        positions = []
        for column in columns:
            if column not in header:
                raise TaskDataError(f"{path}: no column {column!r} in the header {header} "
                                    "(see --sequence-column / --label-column)")
            positions.append(header.index(column))
        rows = []
        for number, row in enumerate(reader):
            if not row:
                continue
            if len(row) != len(header):
                raise TaskDataError(f"{path}: row {number + 1} (line {number + 2}) has {len(row)} fields, "
                                    f"the header has {len(header)}")
            rows.append(tuple(row[p] for p in positions))
    return rows


def _read_parquet(path: Path, columns: tuple[str, str]) -> list[tuple]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise TaskDataError(f"{path}: not a readable Parquet file ({e})") from None
    for column in columns:
        if column not in schema.names:
            raise TaskDataError(f"{path}: no column {column!r} in {schema.names} "
                                "(see --sequence-column / --label-column)")
    table = pq.read_table(path, columns=list(columns))
    return list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))


def read_split(path: Path, split: str, sequence_column: str, label_column: str) -> RawSplit:
    columns = (sequence_column, label_column)
    rows = _read_parquet(path, columns) if path.suffix == ".parquet" else _read_text_table(path, columns)
    if not rows:
        raise TaskDataError(f"{path}: no data rows")
    return RawSplit(split, path, [r[0] for r in rows], [r[1] for r in rows])


# ----------------------------------------------------------------------------------- labels
def _is_int(text: str) -> bool:
    return text.lstrip("+-").isdigit()


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _looks_per_base(label, sequence: str) -> bool:
    if isinstance(label, (list, tuple, np.ndarray)):
        return True
    text = str(label).strip()
    return len(text) > 1 and text.isdigit() and len(text) == len(str(sequence).strip())


def detect_task_type(raw: RawSplit) -> str:
    if all(_looks_per_base(lab, seq) for lab, seq in zip(raw.labels, raw.sequences, strict=True)):
        return "per_base"
    texts = [str(lab).strip() for lab in raw.labels]
    if all(_is_int(t) for t in texts) or not all(_is_number(t) for t in texts):
        return "classification"
    return "regression"


def _per_base_values(raw: RawSplit, row: int, column: str) -> np.ndarray:
    label = raw.labels[row]
    if isinstance(label, (list, tuple, np.ndarray)):
        values = list(label)
    else:
        text = str(label).strip()
        if not text.isdigit():
            raise TaskDataError(f"{raw.where(row, column)}: per-base label {text[:40]!r} is not a string of "
                                "one digit per base")
        values = [int(ch) for ch in text]
    try:
        out = np.array([int(v) for v in values], dtype=np.int64)
    except (TypeError, ValueError):
        raise TaskDataError(f"{raw.where(row, column)}: per-base labels must be integers") from None
    n = len(str(raw.sequences[row]).strip())
    if len(out) != n:
        raise TaskDataError(f"{raw.where(row, column)}: {len(out)} per-base labels for a sequence of "
                            f"{n} bases")
    if ((out < 0) & (out != IGNORE_INDEX)).any():
        raise TaskDataError(f"{raw.where(row, column)}: per-base labels must be >= 0 "
                            f"({IGNORE_INDEX} = unlabelled)")
    return out


def _class_key(text: str):
    return (0, int(text), "") if _is_int(text) else (1, 0, text)


def _check_two_classes(raw: RawSplit, seen: set, column: str) -> None:
    if len(seen) < 2:
        only = next(iter(seen)) if seen else "none"
        raise TaskDataError(f"{raw.path}: column {column!r} has a single class ({only}) in all "
                            f"{len(raw.labels)} rows; classification needs at least two")


def encode_labels(raws: dict[str, RawSplit], task_type: str, column: str) -> tuple[list, dict]:
    """-> (classes, {split: labels}) with labels as TaskSplit stores them."""
    if task_type == "regression":
        out = {}
        for name, raw in raws.items():
            values = []
            for row, label in enumerate(raw.labels):
                text = str(label).strip()
                if not _is_number(text):
                    raise TaskDataError(f"{raw.where(row, column)}: regression label {text!r} is not a "
                                        "finite number")
                values.append(float(text))
            out[name] = np.array(values, dtype=np.float32)
        return [], out
    if task_type == "per_base":
        per_split = {name: [_per_base_values(raw, r, column) for r in range(len(raw.labels))]
                     for name, raw in raws.items()}
        for name, raw in raws.items():
            _check_two_classes(raw, {int(v) for arr in per_split[name] for v in arr if v != IGNORE_INDEX},
                               column)
        classes = sorted({int(v) for arr in per_split["train"] for v in arr if v != IGNORE_INDEX})
        index = {c: i for i, c in enumerate(classes)}
        out = {}
        for name, raw in raws.items():
            mapped = []
            for row, arr in enumerate(per_split[name]):
                unknown = sorted({int(v) for v in arr if v != IGNORE_INDEX and int(v) not in index})
                if unknown:
                    raise TaskDataError(f"{raw.where(row, column)}: per-base class {unknown[0]} never "
                                        "occurs in train")
                mapped.append(np.array([index.get(int(v), IGNORE_INDEX) for v in arr], dtype=np.int64))
            out[name] = mapped
        return classes, out
    texts = {name: [str(lab).strip() for lab in raw.labels] for name, raw in raws.items()}
    for name, raw in raws.items():
        for row, text in enumerate(texts[name]):
            if not text:
                raise TaskDataError(f"{raw.where(row, column)}: empty label")
        _check_two_classes(raw, set(texts[name]), column)
    classes = sorted(set(texts["train"]), key=_class_key)
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for name, raw in raws.items():
        for row, text in enumerate(texts[name]):
            if text not in index:
                raise TaskDataError(f"{raw.where(row, column)}: label {text!r} never occurs in train "
                                    f"(train classes: {classes[:10]})")
        out[name] = np.array([index[t] for t in texts[name]], dtype=np.int64)
    classes = [int(c) if _is_int(c) else c for c in classes]
    return classes, out


def encode_sequences(raw: RawSplit, column: str) -> list[np.ndarray]:
    out = []
    for row, seq in enumerate(raw.sequences):
        text = "" if seq is None else str(seq).strip()
        if not text:
            raise TaskDataError(f"{raw.where(row, column)}: empty sequence")
        try:
            out.append(encode(text))
        except ValueError as e:
            raise TaskDataError(f"{raw.where(row, column)}: {e}") from None
    return out


def load_task(task_dir: str | Path, task_type: str = "auto", sequence_column: str = "sequence",
              label_column: str = "label", max_train_samples: int | None = None) -> TaskData:
    """Read and check every split of task_dir; `max_train_samples` keeps the first rows of train."""
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise TaskDataError(f"--task {task_dir}: not a directory")
    paths = {split: find_split_file(task_dir, split) for split in SPLITS}  # all missing splits fail first
    raws = {split: read_split(path, split, sequence_column, label_column) for split, path in paths.items()}
    if max_train_samples is not None:
        train = raws["train"]
        raws["train"] = RawSplit("train", train.path, train.sequences[:max_train_samples],
                                 train.labels[:max_train_samples])
    if task_type == "auto":
        task_type = detect_task_type(raws["train"])
    elif task_type not in TASK_TYPES:
        raise TaskDataError(f"--task-type {task_type!r}: choose auto or one of {TASK_TYPES}")
    ids = {split: encode_sequences(raw, sequence_column) for split, raw in raws.items()}
    classes, labels = encode_labels(raws, task_type, label_column)
    splits = {s: TaskSplit(s, raws[s].path, ids[s], labels[s]) for s in SPLITS}
    return TaskData(task_dir.name, task_type, classes, **splits)


# ---------------------------------------------------------------------------------- batching
def length_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                            pool_batches: int = 50) -> list[np.ndarray]:
    """A shuffled epoch of global batches whose members have similar lengths: shuffle, cut into pools
    of `pool_batches` batches, sort each pool by length, cut it into batches, shuffle the batches.
    Padding stays small while batch composition still changes every epoch."""
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Longest first, fixed: the same batches (hence bit-identical outputs) in every evaluation."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(split: TaskSplit, index: np.ndarray, task_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `index` of split -> (input_ids [B, N] right-padded with PAD, labels [B] or [B, N])."""
    width = int(split.lengths[index].max())
    ids = torch.full((len(index), width), PAD, dtype=torch.long)
    for row, i in enumerate(index):
        ids[row, :split.lengths[i]] = torch.from_numpy(split.ids[i].astype(np.int64))
    if task_type == "per_base":
        labels = torch.full((len(index), width), IGNORE_INDEX, dtype=torch.long)
        for row, i in enumerate(index):
            labels[row, :split.lengths[i]] = torch.from_numpy(split.labels[i])
    else:
        labels = torch.from_numpy(np.asarray(split.labels)[index])
    return ids, labels
