"""Reading whole 1-D uint8 zarr v3 arrays from a local store, synchronously: the mirror of
`zarr_writer`.

Cutting shards reads every record of the store once, front to back (`prepare.py --workers N` and
`--from-store`). Through zarr-python, `group[name]` plus `array[:]` costs ~1.5 ms of CPU per record
(an event-loop hop, a thread-pool hop per file, the general selection path): on the real genomes the
read-back cost about as much as parsing the FASTA. This reader does the same decoding with zarr's
own pieces on the calling thread:
  * the array document: zarr's `ArrayV3Metadata.from_dict` (so an unsupported document fails as
    zarr would fail on it);
  * chunk bytes: the codecs' synchronous `_decode_sync`, last codec first, each with the chunk spec
    that zarr resolves for it;
  * a chunk file that does not exist is all fill value, as in zarr (it does not write empty chunks).
tests/unit/test_data_zarr_writer.py checks it against zarr's reads of the same stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from zarr.abc.codec import SupportsSyncCodec
from zarr.core.array_spec import ArrayConfig
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata import ArrayV3Metadata

_PROTOTYPE = default_buffer_prototype()
_ARRAY_CONFIG = ArrayConfig.from_dict({})


class ZarrReadError(ValueError):
    """A node of the store cannot be read; the message names the file."""


class ZarrReader:
    """Reads nodes of a zarr v3 hierarchy under `root`, a local directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def attributes(self, path: str) -> dict:
        """The attributes of the group or array at `path`."""
        return self._document(path).get("attributes", {})

    def child_arrays(self, group: str) -> list[str]:
        """Names of the arrays directly under `group`, sorted (zarr's `array_keys` order)."""
        directory = self.root / group
        return sorted(p.name for p in directory.iterdir()
                      if (p / "zarr.json").is_file() and self._document(f"{group}/{p.name}").get("node_type") == "array")  # fmt: skip

    def read_uint8_array(self, path: str) -> tuple[np.ndarray, dict]:
        """The whole array at `path` and its attributes."""
        document = self._document(path)
        try:
            metadata = ArrayV3Metadata.from_dict(document)
        except Exception as exc:  # noqa: BLE001 - zarr raises several types for a bad document
            raise ZarrReadError(f"{self._file(path)}: not a zarr v3 array document ({exc})") from None
        if len(metadata.shape) != 1 or np.dtype(metadata.dtype.to_native_dtype()) != np.uint8:
            raise ZarrReadError(f"{self._file(path)}: expected a 1-D uint8 array, got "
                                f"shape {metadata.shape} of {metadata.dtype}")  # fmt: skip
        (length,) = metadata.shape
        (chunk,) = metadata.chunks
        out = np.full(length, metadata.fill_value, np.uint8)
        for index, start in enumerate(range(0, length, chunk)):
            key = f"{path}/{metadata.encode_chunk_key((index,))}"
            try:
                encoded = (self.root / key).read_bytes()
            except FileNotFoundError:
                continue  # never written: all fill value
            try:
                values = self._decode_chunk(metadata, encoded)
            except Exception as exc:  # noqa: BLE001 - codecs raise their own types on bad bytes
                raise ZarrReadError(f"{self.root / key}: corrupt chunk ({type(exc).__name__}: {exc})") from None
            out[start : start + chunk] = values[: length - start]
        return out, metadata.attributes

    # ---------------------------------------------------------------------------------- internals
    def _file(self, path: str) -> Path:
        return self.root / path / "zarr.json"

    def _document(self, path: str) -> dict:
        file = self._file(path)
        try:
            document = json.loads(file.read_bytes())
        except FileNotFoundError:
            raise ZarrReadError(f"{file}: missing (no zarr node at {path!r})") from None
        except ValueError as exc:
            raise ZarrReadError(f"{file}: not JSON ({exc})") from None
        if document.get("zarr_format") != 3:
            raise ZarrReadError(f"{file}: not a zarr v3 document")
        return document

    @staticmethod
    def _decode_chunk(metadata: ArrayV3Metadata, encoded: bytes) -> np.ndarray:
        specs = [metadata.get_chunk_spec((0,), _ARRAY_CONFIG, _PROTOTYPE)]
        for codec in metadata.codecs[:-1]:  # the spec each codec sees when encoding
            specs.append(codec.resolve_metadata(specs[-1]))
        buffer = _PROTOTYPE.buffer.from_bytes(encoded)
        for codec, spec in zip(reversed(metadata.codecs), reversed(specs)):
            if not isinstance(codec, SupportsSyncCodec):
                raise TypeError(f"codec {codec!r} has no synchronous decoder")
            buffer = codec._decode_sync(buffer, spec)
        return buffer.as_numpy_array().reshape(-1)
