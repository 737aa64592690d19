"""Writing a zarr v3 directory store on the calling thread, through zarr's public API.

zarr-python's `LocalStore` hands every file read, write and existence check to a thread pool, and
its synchronous API hands every call to zarr's event-loop thread and waits for it: a fixed cost of a
few ms of CPU per array created, whatever its size (BENCHMARKS.md), which on a corpus of many small
genomes is a real share of the run. So the writers here touch neither:
* `zarr.storage.MemoryStore` keeps its keys in any `MutableMapping` the caller passes (`store_dict`)
  and touches nothing else; `FileMapping` is that mapping with one file per key under a root
  directory, the same paths a `LocalStore` uses, so what it writes is a plain zarr directory store
  that `zarr.open_group(path)` reads. Files are written in place, not through a temporary name:
  prepare.py builds the whole output in a hidden directory and publishes it only when complete.
* Groups and arrays are written through zarr's asynchronous API (`zarr.AsyncGroup`,
  `zarr.AsyncArray`), each call awaited by `run` on an event loop of the calling thread's own (or on
  a short-lived thread's, where the caller already runs a loop, as a Jupyter kernel does).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import zarr
from zarr.buffer.cpu import Buffer
from zarr.storage import MemoryStore

T = TypeVar("T")
_thread = threading.local()  # the event loop of each thread that writes


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


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Await a zarr coroutine on an event loop of this thread's own (created on first use)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: no loop running here
        loop = getattr(_thread, "loop", None)
        if loop is None:
            loop = _thread.loop = asyncio.new_event_loop()
        return loop.run_until_complete(coroutine)
    # This thread runs a loop already (a Jupyter kernel calling prepare.main): await on another thread.
    with ThreadPoolExecutor(max_workers=1) as helper:
        return helper.submit(asyncio.run, coroutine).result()


def open_for_writing(root: str | Path) -> zarr.AsyncGroup:
    """The root group of the store at `root` (created if missing), for writing through `run`."""
    return run(zarr.api.asynchronous.open_group(store=MemoryStore(FileMapping(root)), mode="a",
                                                zarr_format=3))
