"""The concatenated bases of one genome in the store (`GROUP/seq`), written and read through zarr's
public API.

One uint8 array per input file holds all its records back to back (record i is
`seq[start:stop]` of row i of `record_table`), one byte per base: the code (A=0 C=1 G=2 T=3 N=4)
OR-ed with 0x08 where the input was lower case (`data_prep.normalize`). Inner chunks of CHUNK bases
are the random-access unit; zarr v3's sharding codec packs SHARD bases of them into one file, so a
genome costs one file per 64 Mbp however many records it has. A genome shorter than one shard is
written in one call with chunks cut to its size (`chunk_layout`): padding a 5 kb virus to a 1 Mbp
chunk would cost more CPU than parsing it. Blosc-LZ4 with bit-shuffle stores
each of the 8 bit planes separately: the two that carry A/C/G/T cost ~1 bit a base each on random
sequence and the N and soft-mask planes almost nothing unless they vary, ~0.25 bytes a base in all
(BENCHMARKS.md), at ~1 GB/s each way.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from data_prep.store_files import run

NAME = "seq"
CHUNK = 1 << 20  # bases per inner chunk: the random-access granularity
SHARD = 1 << 26  # bases per shard file
COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=1)
# zarr skips chunks equal to the fill value unless told otherwise, which costs a comparison of every
# chunk (0.24 s on the real genomes) to save nothing: a genome has no 1 Mbp run of unmasked A.
_CONFIG = {"write_empty_chunks": True}


class SequenceWriter:
    """Appends records to `group/seq`, writing each shard once it is full and the rest at `close`,
    so memory holds at most one shard plus the record being added."""

    def __init__(self, group: zarr.AsyncGroup):
        self.group = group
        self.array: zarr.AsyncArray | None = None  # created on the first write, once its length is known
        self.pending: list[np.ndarray] = []
        self.pending_bases = 0
        self.written = 0

    def append(self, codes: np.ndarray) -> None:
        if codes.size:
            self.pending.append(codes)
            self.pending_bases += codes.size
        if self.pending_bases >= SHARD:
            self._flush(final=False)

    def close(self) -> int:
        """Write what is pending; return the array's length (bases of the whole genome)."""
        self._flush(final=True)
        if self.array is None:  # a genome without bases still gets its (empty) array
            self._grow(0)
        return self.written

    def _flush(self, final: bool) -> None:
        data = (self.pending[0] if len(self.pending) == 1
                else np.concatenate(self.pending or [np.zeros(0, np.uint8)]))
        count = data.size if final else data.size - data.size % SHARD  # whole shards only until the end
        if count and self.array is None and final:  # the whole genome at once
            chunk, shard = chunk_layout(count)
            self.array = run(self.group.create_array(NAME, data=data, chunks=(chunk,), shards=(shard,),
                                                     compressors=[COMPRESSOR], fill_value=0,
                                                     config=_CONFIG))  # fmt: skip
            self.written = count
        elif count:
            self._grow(self.written + count)
            run(self.array.setitem(slice(self.written, self.written + count), data[:count]))
            self.written += count
        rest = data[count:]
        self.pending, self.pending_bases = ([rest] if rest.size else []), rest.size

    def _grow(self, length: int) -> None:
        if self.array is None:
            chunk, shard = chunk_layout(length)
            self.array = run(self.group.create_array(NAME, shape=(length,), dtype="uint8", chunks=(chunk,),
                                                     shards=(shard,), compressors=[COMPRESSOR], fill_value=0,
                                                     config=_CONFIG))  # fmt: skip
        else:
            run(self.array.resize((length,)))


def chunk_layout(length: int) -> tuple[int, int]:
    """(chunk, shard) bases for an array created `length` long: CHUNK and SHARD when it may grow
    (created at a whole number of shards), else the smallest power of two >= length up to CHUNK,
    and a single shard of whole chunks covering the array."""
    if length and length % SHARD == 0:
        return CHUNK, SHARD
    chunk = min(CHUNK, 1 << max(0, length - 1).bit_length())
    return chunk, max(chunk, -(-length // chunk) * chunk)


def iter_slices(array: zarr.Array, offsets: np.ndarray, block: int = SHARD) -> Iterator[np.ndarray]:
    """Each record's bases in order, `array[offsets[i]:offsets[i + 1]]`, read in blocks of about
    `block` bases (one zarr call per block, not per record: a draft genome has 10^4-10^6 records)."""
    buffer, buffer_start = np.zeros(0, np.uint8), 0
    total = array.shape[0]
    for start, stop in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        buffer_stop = buffer_start + buffer.size
        if stop > buffer_stop:
            read_to = min(total, max(stop, buffer_stop + block))
            buffer = np.concatenate([buffer[start - buffer_start :], array[buffer_stop:read_to]])
            buffer_start = start
        yield buffer[start - buffer_start : stop - buffer_start]
