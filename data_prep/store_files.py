"""Writing a zarr v3 directory store on the calling thread, through zarr's public API.

zarr-python's `LocalStore` hands every file read, write and existence check to a thread pool, and
every synchronous call hops to zarr's event-loop thread first: about 5 ms of CPU per array created
on this machine, whatever its size (BENCHMARKS.md), so a store of a few arrays per genome over a
corpus of many small genomes would spend more time in zarr than in parsing. `zarr.storage.MemoryStore`
keeps its keys in any `MutableMapping` the caller passes (`store_dict`) and touches nothing else;
`FileMapping` is that mapping with one file per key under a root directory, the same paths a
`LocalStore` uses, so what it writes is a plain zarr directory store that `zarr.open_group(path)`
reads. Files are written in place, not through a temporary name: prepare.py builds the whole
output in a hidden directory and publishes it only when complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from pathlib import Path

import zarr
from zarr.buffer.cpu import Buffer
from zarr.storage import MemoryStore


class FileMapping(MutableMapping):
    """zarr keys ("000000/seq/c/0", "zarr.json", ...) as files under `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._directories: set[Path] = set()  # created by this mapping: no mkdir call per key

    def __setitem__(self, key: str, value: Buffer) -> None:
        path = self.root / key
        if path.parent not in self._directories:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._directories.add(path.parent)
        with open(path, "wb") as handle:
            handle.write(value.as_buffer_like())

    def __getitem__(self, key: str) -> Buffer:
        try:
            return Buffer.from_bytes((self.root / key).read_bytes())
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise KeyError(key) from None

    def __delitem__(self, key: str) -> None:
        try:
            (self.root / key).unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (self.root / key).is_file()

    def __iter__(self) -> Iterator[str]:
        for directory, _, files in os.walk(self.root):
            prefix = Path(directory).relative_to(self.root).as_posix()
            for name in files:
                yield name if prefix == "." else f"{prefix}/{name}"

    def __len__(self) -> int:
        return sum(1 for _ in self)


def open_for_writing(root: str | Path) -> zarr.Group:
    """The root group of the store at `root` (created if missing), written on the calling thread."""
    return zarr.open_group(MemoryStore(FileMapping(root)), mode="a", zarr_format=3)
