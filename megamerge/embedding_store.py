"""Writing an embedding zarr store (its layout: megamerge/sequence_embeddings.py) without holding it
in memory: the per-base and per-token arrays grow along their first axis in whole chunks, so a
chromosome's per-base states stream to disk. The store is built under a hidden name beside `out`
and renamed into place only when complete, so an interrupted or failed run leaves nothing at
`out`, and an existing `out` is never touched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CHUNK_BYTES = 4 << 20  # about 4 MiB per chunk before compression
MIN_CHUNK_ROWS = 1024


def check_new_store(out: Path) -> None:
    if out.exists():
        raise ValueError(f"--out {out} already exists; choose a new path")


def chunk_rows(row_shape: tuple[int, ...], dtype) -> int:
    """Rows per chunk along the first (base or token) axis."""
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return max(MIN_CHUNK_ROWS, CHUNK_BYTES // max(row_bytes, 1))


class GrowingArray:
    """A zarr array filled in row order; rows wait in memory until a whole chunk can be written."""

    def __init__(self, group, name: str, row_shape: tuple[int, ...], dtype, dimensions: tuple[str, ...]):
        self.rows_per_chunk = chunk_rows(row_shape, dtype)
        self.array = group.create_array(name, shape=(0, *row_shape), dtype=dtype,
                                        chunks=(self.rows_per_chunk, *row_shape), dimension_names=dimensions)
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0

    def append(self, rows: np.ndarray) -> None:
        self.pending.append(rows)
        self.pending_rows += len(rows)
        if self.pending_rows >= self.rows_per_chunk:
            self._flush(self.pending_rows // self.rows_per_chunk * self.rows_per_chunk)

    def close(self) -> None:
        self._flush(self.pending_rows)

    def _flush(self, n_rows: int) -> None:
        if n_rows == 0:
            return
        rows = np.concatenate(self.pending)
        self.array.append(rows[:n_rows])
        self.pending = [rows[n_rows:]]
        self.pending_rows = len(rows) - n_rows


class StoreWriter:
    """Adds arrays and attrs to an open zarr group: growing ones via `growing`, whole ones via `put`.
    Each array's axes are named (zarr's dimension_names) from `dimensions`, so xarray.open_zarr
    reads the store as one Dataset."""

    def __init__(self, root, dimensions: dict[str, tuple[str, ...]]):
        self.root = root
        self.dimensions = dimensions
        self.growing_arrays: list[GrowingArray] = []

    def growing(self, name: str, row_shape: tuple[int, ...], dtype) -> GrowingArray:
        array = GrowingArray(self.root, name, row_shape, dtype, self.dimensions[name])
        self.growing_arrays.append(array)
        return array

    def put(self, name: str, value: np.ndarray) -> None:
        chunks = (min(max(len(value), 1), chunk_rows(value.shape[1:], value.dtype)), *value.shape[1:])
        # Variable-length UTF-8 for ids and labels: the string type zarr v3 has a registered spec for.
        dtype = str if value.dtype.kind == "U" else value.dtype
        self.root.create_array(name, shape=value.shape, dtype=dtype, chunks=chunks,
                               dimension_names=self.dimensions[name])[...] = value

    def attrs(self, values: dict) -> None:
        self.root.attrs.update(values)

    def close(self) -> None:
        for array in self.growing_arrays:
            array.close()


@contextmanager
def new_store(out: Path, dimensions: dict[str, tuple[str, ...]]) -> Iterator[StoreWriter]:
    """A writer for a store built under a hidden name beside `out`, renamed to `out` when the block
    ends without an exception (and removed when it raises)."""
    import zarr

    check_new_store(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        writer = StoreWriter(zarr.open_group(store=str(tmp), mode="w", zarr_format=3), dimensions)
        yield writer
        writer.close()
        check_new_store(out)  # nothing appeared there while we worked
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
