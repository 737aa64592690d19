"""The zarr v3 genome store: the durable, random-access copy of a corpus that shards are cut from.

Layout of `genomes.zarr` (format_version 3; data_prep/README.md shows how to read it with zarr alone):
    /                          attrs: format, format_version, megamerge_version, on_invalid,
                               sequence_encoding, files (one summary per input file, with its group)
    /<file>/                   one group per input file ("000000", "000001", ... in input order),
                               attrs: group, species, source_file, file_name, sha256, bytes, records,
                               empty_records, counts
    /<file>/seq                uint8 [bases of the file]: every record back to back, one byte a base,
                               code (A=0 C=1 G=2 T=3 N=4) | 0x08 where the input was lower case;
                               1 Mbp chunks in 64 Mbp shard files (data_prep/sequence_array.py)
    /<file>/record_table       int64 [records, 6]: start, stop, n, iupac, lower, invalid (attr `columns`):
                               record i is seq[start:stop], with its base counts
    /<file>/record_names       string [records, 2]: id (first word of the header), description (the
                               whole header line) (attr `columns`)

So a file costs a fixed handful of files in the store (one per array document and per shard), not
a few per record. Record metadata is two arrays, not one per field: creating a zarr array costs
~2 ms of CPU whatever its size, which on a corpus of small genomes is a real share of the run
(BENCHMARKS.md). The identity of ambiguity codes is gone (they are N); their counts stay.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

import megamerge
from data_prep.fasta import read_fasta, sha256_of
from data_prep.normalize import ALPHABET, BaseCounts
from data_prep.sequence_array import SequenceWriter, iter_slices
from data_prep.store_files import open_for_writing, run
from megamerge.base_codes import SOFTMASK_BIT

STORE_FORMAT = "megamerge-genome-store"
STORE_FORMAT_VERSION = 3
COUNT_COLUMNS = ("n", "iupac", "lower", "invalid")  # BaseCounts field names
TABLE_COLUMNS = ("start", "stop", *COUNT_COLUMNS)  # record_table columns
NAME_COLUMNS = ("id", "description")  # record_names columns
SEQUENCE_ENCODING = {
    "codes": {chr(base): code for code, base in enumerate(ALPHABET)},
    "softmask_bit": SOFTMASK_BIT,
    "note": "seq holds one byte per base: the code OR-ed with softmask_bit where the input was lower "
    "case; IUPAC ambiguity codes (and, with --on-invalid n, invalid characters) are N",
}
# byte -> letter: the code's letter, lower case with the soft-mask bit; '?' for a byte no writer makes
_LETTERS = ALPHABET + b"???" + ALPHABET.lower() + b"???"
_DECODE = _LETTERS + b"?" * (256 - len(_LETTERS))


@dataclass
class StoredRecord:
    group: str
    index: int  # position in its file (and in the group's record arrays)
    species: str
    record_id: str
    source_file: str
    counts: BaseCounts
    codes: np.ndarray  # uint8 [L], codes with the soft-mask bit

    @property
    def locator(self) -> str:
        return record_locator(self.group, self.index)


def record_locator(group: str, index: int) -> str:
    """GROUP/INDEX, the `array` field of the record's shard samples."""
    return f"{group}/{index:06d}"


def decode(codes: np.ndarray) -> str:
    """Store bytes -> bases as text, lower case where soft-masked."""
    return np.ascontiguousarray(codes, np.uint8).tobytes().translate(_DECODE).decode("ascii")


def create_store(path: Path) -> None:
    open_for_writing(path)


class FileIngest:
    """Parse one FASTA file into group `group` of the store. Iterating writes the records one by
    one and yields each as a `StoredRecord`, so shards can be cut while the file is ingested
    without reading the store back; `summary` is complete once iteration ends."""

    def __init__(self, store_path: str, group: str, fasta_path: str, species: str, on_invalid: str):
        self.store_path, self.group, self.species, self.on_invalid = store_path, group, species, on_invalid
        self.path = Path(fasta_path)
        self.summary: dict | None = None

    def __iter__(self) -> Iterator[StoredRecord]:
        path = self.path
        file_sha = sha256_of(path)
        group = run(open_for_writing(self.store_path).create_group(self.group))  # attributes at the end
        sequence = SequenceWriter(group)
        totals = BaseCounts()
        offsets, ids, descriptions, counts = [0], [], [], []
        for record in read_fasta(path, self.on_invalid):
            sequence.append(record.codes)
            offsets.append(offsets[-1] + record.counts.length)
            ids.append(record.record_id)
            descriptions.append(record.description)
            counts.append([getattr(record.counts, column) for column in COUNT_COLUMNS])
            totals.add(record.counts)
            yield StoredRecord(self.group, record.index, self.species, record.record_id, str(path),
                               record.counts, record.codes)  # fmt: skip
        if sequence.close() != offsets[-1]:
            raise AssertionError(f"{path}: {sequence.written} bases stored for {offsets[-1]} read")
        _write_record_arrays(group, offsets, ids, descriptions, counts)
        self.summary = {
            "group": self.group,
            "species": self.species,
            "source_file": str(path),
            "file_name": path.name,
            "sha256": file_sha,
            "bytes": path.stat().st_size,
            "records": len(ids),
            "empty_records": int(np.count_nonzero(np.diff(offsets) == 0)),
            "counts": totals.as_dict(),
        }
        run(group.update_attributes(self.summary))


def _write_record_arrays(group: zarr.AsyncGroup, offsets: list, ids: list, descriptions: list,
                         counts: list) -> None:
    records = len(ids)
    rows = max(1, min(records, 1 << 20))  # one chunk file per array up to a million records
    table = np.empty((records, len(TABLE_COLUMNS)), np.int64)  # [records, 6]
    table[:, 0], table[:, 1] = offsets[:-1], offsets[1:]
    table[:, 2:] = np.asarray(counts, np.int64).reshape(records, len(COUNT_COLUMNS))
    run(group.create_array("record_table", data=table, chunks=(rows, len(TABLE_COLUMNS)),
                           attributes={"columns": list(TABLE_COLUMNS)}))  # fmt: skip
    names = {"chunks": (rows, len(NAME_COLUMNS)), "attributes": {"columns": list(NAME_COLUMNS)}}
    if records:
        text = np.asarray([ids, descriptions], dtype=np.dtypes.StringDType()).T  # [records, 2]
        run(group.create_array("record_names", data=np.ascontiguousarray(text), **names))
    else:
        run(group.create_array("record_names", shape=(0, len(NAME_COLUMNS)), dtype=str, **names))


def record_offsets(table: np.ndarray) -> np.ndarray:
    """record_table [records, 6] -> int64 [records + 1]: record i is seq[offsets[i]:offsets[i + 1]]
    (records lie back to back)."""
    return np.append(table[:, 0], table[-1, 1] if len(table) else 0)


def ingest_file(store_path: str, group: str, fasta_path: str, species: str, on_invalid: str) -> dict:
    """Ingest without cutting (worker processes: plain picklable arguments and result)."""
    job = FileIngest(store_path, group, fasta_path, species, on_invalid)
    for _ in job:
        pass
    return job.summary


def finalize_store(path: Path, files: list[dict], on_invalid: str) -> None:
    """Write the root attributes; until then readers refuse the store as unfinished."""
    attributes = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "megamerge_version": megamerge.__version__,
        "on_invalid": on_invalid,
        "sequence_encoding": SEQUENCE_ENCODING,
        "files": files,
    }
    run(open_for_writing(path).update_attributes(attributes))  # one write of the root's zarr.json


class GenomeStore:
    """Read side: file summaries from the root attributes, records streamed in corpus order, and
    any record or slice by species and record id."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise FileNotFoundError(f"{self.path}: not a zarr genome store (no zarr.json)")
        try:
            self.root = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        except Exception as exc:  # noqa: BLE001 - zarr raises several types for a bad document
            raise ValueError(f"{self.path / 'zarr.json'}: not a zarr v3 group ({exc})") from None
        attrs = dict(self.root.attrs)
        if attrs.get("format") != STORE_FORMAT:
            raise ValueError(f"{self.path}: not a megamerge genome store (unfinished or foreign)")
        if attrs.get("format_version") != STORE_FORMAT_VERSION:
            raise ValueError(f"{self.path}: store format {attrs.get('format_version')} is not supported "
                             f"(this megamerge reads {STORE_FORMAT_VERSION}); "
                             "prepare it again from the FASTA")  # fmt: skip
        self.attrs = attrs
        self.files: list[dict] = attrs["files"]
        self._ids: dict[str, dict[str, int]] = {}  # group -> record id -> first index

    def iter_records(self) -> Iterator[StoredRecord]:
        for summary in self.files:
            group = self.root[summary["group"]]
            table, ids = group["record_table"][:], group["record_names"][:, 0]
            for index, codes in enumerate(iter_slices(group["seq"], record_offsets(table))):
                record_counts = BaseCounts(int(codes.size), *map(int, table[index, 2:]))
                yield StoredRecord(summary["group"], index, summary["species"], str(ids[index]),
                                   summary["source_file"], record_counts, codes)  # fmt: skip

    def locate(self, species: str, record_id: str) -> tuple[str, int]:
        """(group, index) of the first record `record_id` among the files of `species`."""
        groups = [summary["group"] for summary in self.files if summary["species"] == species]
        if not groups:
            raise KeyError(f"{self.path}: no species {species!r} "
                           f"(has {sorted({f['species'] for f in self.files})})")
        for group in groups:
            if group not in self._ids:
                ids = self.root[group]["record_names"][:, 0]
                self._ids[group] = {}
                for index, name in enumerate(ids.tolist()):
                    self._ids[group].setdefault(name, index)
            if record_id in self._ids[group]:
                return group, self._ids[group][record_id]
        raise KeyError(f"{self.path}: species {species!r} has no record {record_id!r}")

    def codes(self, species: str, record_id: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Bytes of record[start:stop] as stored (code | soft-mask bit); only the chunks it
        touches are read. start/stop are clipped to the record like a Python slice."""
        group, index = self.locate(species, record_id)
        begin, end = (int(x) for x in self.root[group]["record_table"][index, :2])
        first, last, _ = slice(start, stop).indices(end - begin)
        return self.root[group]["seq"][begin + first : begin + max(first, last)]

    def sequence(self, species: str, record_id: str, start: int = 0, stop: int | None = None) -> str:
        """record[start:stop] as text: the input's bases, lower case where soft-masked, ambiguity
        codes as N."""
        return decode(self.codes(species, record_id, start, stop))
