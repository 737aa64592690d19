"""data_prep.zarr_writer writes the same store as zarr-python's create_array + setitem, byte for byte,
and data_prep.zarr_reader reads back what zarr-python reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from data_prep.genome_store import COMPRESSOR
from data_prep.zarr_reader import ZarrReader, ZarrReadError
from data_prep.zarr_writer import ZarrWriter

CHUNK = 1000
ATTRIBUTES = {"record_id": "chr1", "description": "chr1 é ünïcode", "length": 0, "n_count": 7}


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "several_chunks_short_last": rng.integers(0, 5, 2 * CHUNK + 500, dtype=np.uint8),
        "exact_chunks": rng.integers(0, 5, 2 * CHUNK, dtype=np.uint8),
        "shorter_than_chunk": rng.integers(0, 5, 37, dtype=np.uint8),
        "single_base": np.array([3], np.uint8),
        "empty": np.zeros(0, np.uint8),
        # an all-fill-value (all A = 0) chunk is not written by zarr; neither may the writer write it
        "first_chunk_all_fill": np.concatenate([np.zeros(CHUNK, np.uint8), np.full(10, 2, np.uint8)]),
        "all_fill_short": np.zeros(5, np.uint8),
    }


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write_with_zarr(root: Path, arrays: dict[str, np.ndarray]) -> None:
    zarr.open_group(store=str(root), mode="w", zarr_format=3)
    group = zarr.open_group(store=str(root), path="000000", mode="w", zarr_format=3)
    for name, data in arrays.items():
        array = group.create_array(
            name=name,
            shape=data.shape,
            dtype="uint8",
            chunks=(max(1, min(CHUNK, data.size)),),
            compressors=COMPRESSOR,
            attributes=dict(ATTRIBUTES, length=int(data.size)),
        )
        if data.size:
            array[:] = data
    group.attrs.update({"records": len(arrays)})


def _write_with_writer(root: Path, arrays: dict[str, np.ndarray]) -> None:
    writer = ZarrWriter(root)
    writer.write_group("", {})
    writer.write_group("000000", {})
    for name, data in arrays.items():
        writer.write_uint8_array(
            f"000000/{name}", data, CHUNK, COMPRESSOR, dict(ATTRIBUTES, length=int(data.size))
        )
    writer.write_group("000000", {"records": len(arrays)})


def test_writer_output_is_byte_identical_to_zarr(tmp_path):
    arrays = _cases()
    _write_with_zarr(tmp_path / "zarr", arrays)
    _write_with_writer(tmp_path / "writer", arrays)
    expected, written = _files(tmp_path / "zarr"), _files(tmp_path / "writer")
    assert sorted(written) == sorted(expected)
    assert "000000/first_chunk_all_fill/c/0" not in written  # the case above really exercises skipping
    for name in expected:
        assert written[name] == expected[name], name


def test_zarr_reads_back_what_the_writer_wrote(tmp_path):
    arrays = _cases()
    _write_with_writer(tmp_path, arrays)
    group = zarr.open_group(store=str(tmp_path), path="000000", mode="r", zarr_format=3)
    assert group.attrs["records"] == len(arrays)
    for name, data in arrays.items():
        array = group[name]
        assert array.dtype == np.uint8 and array.shape == data.shape
        np.testing.assert_array_equal(array[:], data)
        assert array.attrs.asdict() == dict(ATTRIBUTES, length=int(data.size))


def test_writer_refuses_arrays_that_are_not_1d(tmp_path):
    with pytest.raises(ValueError, match="1-D"):
        ZarrWriter(tmp_path).write_uint8_array("x", np.zeros((2, 2), np.uint8), CHUNK, COMPRESSOR, {})


def test_reader_reads_what_zarr_reads_from_zarrs_own_store(tmp_path):
    arrays = _cases()
    _write_with_zarr(tmp_path, arrays)
    reader = ZarrReader(tmp_path)
    assert reader.child_arrays("000000") == sorted(arrays)
    assert reader.attributes("000000") == {"records": len(arrays)}
    group = zarr.open_group(store=str(tmp_path), path="000000", mode="r", zarr_format=3)
    for name, data in arrays.items():
        values, attributes = reader.read_uint8_array(f"000000/{name}")
        assert values.dtype == np.uint8
        np.testing.assert_array_equal(values, group[name][:])
        np.testing.assert_array_equal(values, data)
        assert attributes == group[name].attrs.asdict()


def test_reader_names_the_file_of_a_corrupt_chunk_or_document(tmp_path):
    _write_with_writer(tmp_path, _cases())
    reader = ZarrReader(tmp_path)
    chunk = tmp_path / "000000" / "exact_chunks" / "c" / "1"
    chunk.write_bytes(chunk.read_bytes()[:20])  # truncated
    with pytest.raises(ZarrReadError, match=r"exact_chunks/c/1: corrupt chunk"):
        reader.read_uint8_array("000000/exact_chunks")
    (tmp_path / "000000" / "single_base" / "zarr.json").write_text("{not json")
    with pytest.raises(ZarrReadError, match=r"single_base/zarr.json: not JSON"):
        reader.read_uint8_array("000000/single_base")
    with pytest.raises(ZarrReadError, match=r"no zarr node at '000000/absent'"):
        reader.read_uint8_array("000000/absent")
