"""data_prep/sequence_array.py: a genome's records appended shard by shard and read back by record,
with shards and chunks made tiny so records straddle shards, chunks and read blocks."""

from __future__ import annotations

import asyncio
from unittest.mock import patch

import numpy as np
import pytest
import zarr

from data_prep import sequence_array
from data_prep.sequence_array import SequenceWriter, chunk_layout, iter_slices
from data_prep.store_files import open_for_writing, run


@pytest.mark.parametrize("lengths", [[0, 5, 130, 1, 0, 64, 63, 200], [64], [3], [0], [64, 64, 1]])
def test_records_straddling_shards_come_back_exactly(tmp_path, lengths):
    rng = np.random.default_rng(len(lengths))
    records = [rng.integers(0, 13, n).astype(np.uint8) for n in lengths]
    with patch.object(sequence_array, "SHARD", 64), patch.object(sequence_array, "CHUNK", 16):
        group = run(open_for_writing(tmp_path / "s.zarr").create_group("000000"))
        writer = SequenceWriter(group)
        for codes in records:
            writer.append(codes)
        assert writer.close() == sum(lengths)
        array = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["000000/seq"]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        for block in (1, 7, 64, 1000):
            read = list(iter_slices(array, offsets, block))
            assert len(read) == len(records)
            for got, expected in zip(read, records):
                assert np.array_equal(got, expected)
    shard_files = list((tmp_path / "s.zarr" / "000000" / "seq").rglob("c/*"))
    assert len(shard_files) == -(-sum(lengths) // 64)  # one file per shard, whatever the records


def test_chunk_layout_fits_small_genomes_and_keeps_growable_ones_regular():
    assert chunk_layout(sequence_array.SHARD * 3) == (sequence_array.CHUNK, sequence_array.SHARD)
    assert chunk_layout(5000) == (8192, 8192)  # a virus: one chunk of its size, not 1 Mbp of padding
    assert chunk_layout(0) == (1, 1) and chunk_layout(1) == (1, 1)
    chunk, shard = chunk_layout(30_000_001)
    assert chunk == sequence_array.CHUNK and shard % chunk == 0 and 0 <= shard - 30_000_001 < chunk


def test_store_writes_work_inside_a_running_event_loop(tmp_path):
    """A Jupyter kernel runs an asyncio loop on the calling thread: the writers must not need that
    thread to be free of one."""
    records = [np.arange(n, dtype=np.uint8) % 13 for n in (5, 0, 70)]

    async def inside_a_loop():
        group = run(open_for_writing(tmp_path / "s.zarr").create_group("000000"))
        writer = SequenceWriter(group)
        for codes in records:
            writer.append(codes)
        return writer.close()

    assert asyncio.run(inside_a_loop()) == 75
    stored = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["000000/seq"][:]
    assert np.array_equal(stored, np.concatenate(records))
