"""Writing whole 1-D zarr v3 arrays and groups into a local store, synchronously.

zarr-python's `create_array` + `array[:] = data` costs 3-5 ms of CPU per array whatever its size
(measured in BENCHMARKS.md): every call hops to zarr's event-loop thread and from there to a
thread pool for each file, checks that no node exists yet, re-reads and re-writes the parent
groups' metadata, and runs the general selection machinery. A genome store holds one array per
record and is written once, front to back, into a fresh directory, so none of that is needed.

This writer produces the same store, file for file and byte for byte (tests/unit/test_data_zarr_writer.py
compares it with zarr's own output), from zarr's own pieces, all on the calling thread:
  * metadata documents: zarr's `ArrayV3Metadata` / `GroupMetadata` and their `to_buffer_dict`;
  * chunk bytes: the array's codecs through their synchronous `_encode_sync` (the
    `zarr.abc.codec.SupportsSyncCodec` protocol), on chunks padded with the fill value exactly as
    zarr pads the last one; a chunk that is all fill value is not written, as zarr does by default
    (`array.write_empty_chunks = False`);
  * files: `LocalStore.set_sync` (atomic write-and-rename, as zarr's async `set`).
Whole records are read back by `zarr_reader.py`, the mirror of this file; slices by zarr-python.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from zarr.abc.codec import SupportsSyncCodec
from zarr.codecs import BytesCodec
from zarr.core.array_spec import ArrayConfig
from zarr.core.buffer import default_buffer_prototype
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.dtype import UInt8
from zarr.core.group import GroupMetadata
from zarr.core.metadata import ArrayV3Metadata
from zarr.storage import LocalStore

_PROTOTYPE = default_buffer_prototype()
_FILL_VALUE = 0  # zarr's default for uint8


class ZarrWriter:
    """Writes nodes of a zarr v3 hierarchy under `root`, a local directory (created if missing)."""

    def __init__(self, root: str | Path):
        self.store = LocalStore(str(root))
        # Only `write_empty_chunks` matters when encoding; the rest are zarr's defaults.
        self._array_config = ArrayConfig.from_dict({})

    def write_group(self, path: str, attributes: dict) -> None:
        """Create or replace the group document at `path` ("" for the root)."""
        self._write_documents(path, GroupMetadata(attributes=attributes, zarr_format=3))

    def write_uint8_array(
        self, path: str, data: np.ndarray, chunk_len: int, compressor, attributes: dict
    ) -> None:
        """One 1-D uint8 array of `data`, in chunks of `chunk_len` (shortened to the array length,
        minimum 1, as the genome store always did), compressed by `compressor` (a zarr codec)."""
        data = np.ascontiguousarray(data, dtype=np.uint8)
        if data.ndim != 1:
            raise ValueError(f"expected a 1-D array, got shape {data.shape}")
        length = data.size
        chunk = max(1, min(chunk_len, length))
        metadata = ArrayV3Metadata(
            shape=(length,),
            data_type=UInt8(),
            chunk_grid=RegularChunkGrid(chunk_shape=(chunk,)),
            chunk_key_encoding={"name": "default", "separator": "/"},
            fill_value=_FILL_VALUE,
            codecs=(BytesCodec(), compressor),
            attributes=attributes,
            dimension_names=None,
        )
        self._write_documents(path, metadata)
        for index, start in enumerate(range(0, length, chunk)):
            encoded = self._encode_chunk(metadata, data[start : start + chunk], chunk)
            if encoded is not None:
                self.store.set_sync(f"{path}/{metadata.encode_chunk_key((index,))}", encoded)

    def _write_documents(self, path: str, metadata: ArrayV3Metadata | GroupMetadata) -> None:
        for name, buffer in metadata.to_buffer_dict(_PROTOTYPE).items():
            self.store.set_sync(f"{path}/{name}" if path else name, buffer)

    def _encode_chunk(self, metadata: ArrayV3Metadata, values: np.ndarray, chunk: int):
        if values.size < chunk:  # the last chunk is stored full size, padded with the fill value
            values = np.concatenate([values, np.full(chunk - values.size, _FILL_VALUE, np.uint8)])
        spec = metadata.get_chunk_spec((0,), self._array_config, _PROTOTYPE)
        if not spec.config.write_empty_chunks and not values.any():  # all fill value (0)
            return None
        encoded = _PROTOTYPE.nd_buffer.from_numpy_array(values)
        for codec in metadata.codecs:
            if not isinstance(codec, SupportsSyncCodec):
                raise TypeError(f"codec {codec!r} has no synchronous encoder")
            encoded = codec._encode_sync(encoded, spec)
            spec = codec.resolve_metadata(spec)
        return encoded
