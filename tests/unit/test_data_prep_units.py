"""Unit tests of the data_prep building blocks: normalisation, chunk accounting, split, tar headers."""

from __future__ import annotations

import hashlib
import json
import tarfile
import zlib
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.chunking import ChunkSpec, chunk_bounds, cut_record, n_counts, union_length
from data_prep.normalize import ALPHABET, CODES, INVALID, SOFTMASK_BIT, InvalidBaseError, N, normalize
from data_prep.shard_writer import SplitShardWriter, ustar_header
from data_prep.split import SplitSpec, record_id_fraction
from megamerge import vocabulary
from megamerge.data.augment import COMPLEMENT, AugmentSpec, augment
from megamerge.data.collate import collate_codes


def test_codes_agree_with_tokenizer():
    assert ALPHABET.decode() == vocabulary.ALPHABET and vocabulary.N == N
    for char in "ACGTNacgtn":
        assert CODES[ord(char)] == vocabulary._ENCODE[ord(char)]
    for char in "RYSWKMBDHVrysw":
        assert CODES[ord(char)] == vocabulary.N
    for char in "UuXx*-. \t0>":
        assert CODES[ord(char)] == INVALID


def test_normalize_counts_and_codes():
    codes, counts = normalize(b"ACGTacgtNnRYkmBDHVww")  # lower case: the code | SOFTMASK_BIT (8)
    assert SOFTMASK_BIT == 8 and codes.tolist() == [
        0, 1, 2, 3, 8, 9, 10, 11, 4, 12, 4, 4, 12, 12, 4, 4, 4, 4, 12, 12]
    assert int(((codes >> 3) & 1).sum()) == counts.lower
    assert (counts.length, counts.n, counts.iupac, counts.lower, counts.invalid) == (20, 2, 10, 9, 0)


def test_normalize_invalid_reports_first_offset():
    with pytest.raises(InvalidBaseError) as caught:
        normalize(b"ACGTNNXAC-")
    assert caught.value.offset == 6 and caught.value.char == "X" and caught.value.more == 1
    codes, counts = normalize(b"ACGTNNXAC-", on_invalid="n")
    assert codes.tolist() == [0, 1, 2, 3, 4, 4, 4, 0, 1, 4] and counts.invalid == 2



@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200)
       | st.text(alphabet="ACGTNacgtnRYSWKMBDHVrysbdhvXU-*", max_size=200).map(str.encode))
def test_normalize_matches_its_per_character_definition(raw):
    expected_codes, n, iupac, lower, invalid = [], 0, 0, 0, 0
    for char in raw.decode("latin-1"):
        mask = SOFTMASK_BIT if char.islower() else 0
        if char.upper() in "ACGTN":
            expected_codes.append("ACGTN".index(char.upper()) | mask)
            n += char in "Nn"
        elif char.upper() in "RYSWKMBDHV":
            expected_codes.append(N | mask)
            iupac += 1
        else:
            expected_codes.append(N)
            invalid += 1
            continue
        lower += char.islower()
    codes, counts = normalize(raw, on_invalid="n")
    assert codes.tolist() == expected_codes and codes.flags.writeable
    assert counts.as_dict() == {"length": len(raw), "n": n, "iupac": iupac, "lower": lower,
                                "invalid": invalid}
    if invalid:
        with pytest.raises(InvalidBaseError) as caught:
            normalize(raw)
        first = next(i for i, c in enumerate(raw) if CODES[c] == INVALID)
        assert caught.value.offset == first and caught.value.more == invalid - 1

def _brute_force_accounting(codes, spec):
    starts, ends = chunk_bounds(codes.size, spec)
    label = np.zeros(codes.size, int)  # 0 short_tail, 1 kept, 2 n_fraction
    n_frac = np.array([(codes[s:e] == N).mean() if e > s else 0 for s, e in zip(starts, ends)])
    short = (ends - starts) < spec.min_len
    many_n = ~short & (n_frac > spec.max_n_frac)
    for s, e, drop in zip(starts, ends, many_n):
        if drop:
            label[s:e] = 2
    for s, e, keep in zip(starts, ends, ~short & ~many_n):
        if keep:
            label[s:e] = 1
    return (label == 1).sum(), (label == 2).sum(), (label == 0).sum()


def test_cut_record_matches_brute_force_accounting():
    rng = np.random.default_rng(0)
    for _ in range(400):
        length = int(rng.integers(0, 400))
        codes = np.where(rng.random(length) < rng.random() ** 2, N,
                         rng.integers(0, 4, length)).astype(np.uint8)
        is_n = codes == N  # before soft-masking: a masked N (12) is still N
        codes |= np.where(rng.random(length) < rng.random(), SOFTMASK_BIT, 0).astype(np.uint8)
        seq_len = int(rng.integers(1, 60))
        spec = ChunkSpec(seq_len, int(rng.integers(0, seq_len)), int(rng.integers(0, seq_len + 1)),
                         rng.random())
        starts, ends = chunk_bounds(length, spec)
        if length:  # chunks tile the record: start at 0, end at the record end, no gaps
            assert starts[0] == 0 and ends[-1] == length and (starts[1:] <= ends[:-1]).all()
        expected = np.array([is_n[s:e].sum() for s, e in zip(starts, ends)], dtype=np.int64)
        assert n_counts(codes, starts, ends).tolist() == expected.tolist()
        kept, n_fraction, short_tail = _brute_force_accounting(codes & 7, spec)
        # with and without the N count the caller knows (0: the fast path of records without N)
        for cut in (cut_record(codes, spec), cut_record(codes, spec, int(is_n.sum()))):
            assert (cut.kept_bases, cut.dropped_bases["n_fraction"], cut.dropped_bases["short_tail"]) == (
                kept, n_fraction, short_tail)  # fmt: skip
            assert cut.kept_bases + sum(cut.dropped_bases.values()) == length
        plain = rng.integers(0, 4, length).astype(np.uint8)  # no N at all: both paths again
        fast, full = cut_record(plain, spec, 0), cut_record(plain, spec)
        assert (fast.kept_bases, fast.dropped_bases) == (full.kept_bases, full.dropped_bases)
        assert fast.starts.tolist() == full.starts.tolist() and fast.lengths.tolist() == full.lengths.tolist()


def test_overlap_counts_kept_bases_once():
    codes = np.zeros(1000, np.uint8)
    cut = cut_record(codes, ChunkSpec(seq_len=100, overlap=50, min_len=10))
    assert len(cut.starts) == 19 and cut.kept_bases == 1000
    assert union_length(cut.starts, cut.starts + cut.lengths) == 1000


def test_split_is_deterministic_and_close_to_fraction():
    spec = SplitSpec(valid_frac=0.2)
    ids = [f"contig_{i}" for i in range(5000)]
    first = [spec.split_of("x", i) for i in ids]
    assert first == [spec.split_of("y", i) for i in ids]  # depends on the record id only
    assert 0.17 < first.count("valid") / len(ids) < 0.23
    assert 0 <= record_id_fraction("chr1") < 1
    held_out = SplitSpec(valid_species=frozenset({"b"}))
    assert held_out.split_of("b", "r") == "valid" and held_out.split_of("a", "r") == "train"
    with pytest.raises(ValueError):
        SplitSpec(valid_species=frozenset({"b"}), valid_frac=0.1)


def test_fast_tar_header_equals_tarfile():
    for name, size in [("0000000001.seq", 4096), ("0000000001.json", 123), ("x", 0), ("k.seq", 8**11 - 1)]:
        info = tarfile.TarInfo(name)
        info.mode, info.mtime, info.size = 0o444, 0, size
        assert ustar_header(name.encode(), size) == info.tobuf(format=tarfile.USTAR_FORMAT)


def test_shard_writer_writes_every_chunk_with_its_json_and_reports_true_hashes(tmp_path):
    codes = np.random.default_rng(0).integers(0, 5, 10_000, dtype=np.uint8)
    records = [({"species": "A", "record": "r1 é", "record_index": 0}, [0, 4096, 8192], [4096, 4096, 1808]),
               ({"species": "B", "record": "r2", "record_index": 1}, [100], [7])]  # fmt: skip
    writer = SplitShardWriter(tmp_path, "train", samples_per_shard=3, mix=2, seed=1)
    for meta, starts, lengths in records:
        writer.write_chunks(codes, starts, lengths, meta, f"000000-{meta['record_index']:06d}")
    again = SplitShardWriter(tmp_path / "again", "train", samples_per_shard=3, mix=2, seed=1)
    for meta, starts, lengths in records:
        again.write_chunks(codes, starts, lengths, meta, f"000000-{meta['record_index']:06d}")
    shards = writer.close()
    assert [vars(s) for s in shards] == [vars(s) for s in again.close()] and len(shards) >= 2  # deterministic
    assert sum((Counter(s.samples_by_species) for s in shards), Counter()) == Counter({"A": 3, "B": 1})
    assert all(sum(s.samples_by_species.values()) == s.samples for s in shards)
    expected = {(r["record"], start): dict(r, start=start, length=length)
                for r, starts, lengths in records for start, length in zip(starts, lengths)}  # fmt: skip
    seen = set()
    for shard in shards:  # sha256 and size are computed while writing; they must match the file
        data = (tmp_path / shard.path).read_bytes()
        assert shard.bytes == len(data) and shard.sha256 == hashlib.sha256(data).hexdigest()
        with tarfile.open(tmp_path / shard.path) as tar:
            names = tar.getnames()
            assert len(names) == 2 * shard.samples
            for seq_name, json_name in zip(names[0::2], names[1::2]):
                assert seq_name[:-4] == json_name[:-5] and seq_name.endswith(".seq")
                raw = tar.extractfile(json_name).read()
                meta = json.loads(raw)
                # order-free key
                assert seq_name == f"000000-{meta['record_index']:06d}-{meta['start']:010d}.seq"
                seq = tar.extractfile(seq_name).read()
                assert raw == json.dumps(meta, separators=(",", ":")).encode()  # compact, ASCII-escaped
                assert meta == dict(expected[meta["record"], meta["start"]], crc32=zlib.crc32(seq))
                assert list(meta)[-3:] == ["start", "length", "crc32"]
                assert seq == codes[meta["start"] : meta["start"] + meta["length"]].tobytes()
                seen.add((meta["record"], meta["start"]))
    assert seen == set(expected)  # every chunk exactly once


def test_augment_reverse_complement_matches_tokenizer_and_is_deterministic():
    codes = np.random.default_rng(1).integers(0, 5, 300).astype(np.uint8)
    spec = AugmentSpec(seq_len=100, random_crop=True, reverse_complement=True, seed=3)
    outcomes = {augment(codes, f"{k:010d}", 0, spec)[1:] for k in range(200)}
    assert {flip for _, flip in outcomes} == {True, False}  # both branches are taken
    assert len({offset for offset, _ in outcomes}) > 50  # offsets spread over [0, 200]
    for key in ("0000000007", "0000000008", "0000000009"):
        out, offset, flip = augment(codes, key, 2, spec)
        again = augment(codes, key, 2, spec)
        assert np.array_equal(out, again[0]) and (offset, flip) == again[1:]
        window = torch.from_numpy(codes[offset : offset + 100].astype(np.int64))
        expected = vocabulary.reverse_complement(window) if flip else window
        assert out.tolist() == expected.tolist()
    assert COMPLEMENT.tolist() == vocabulary._COMPLEMENT[:5].tolist()


def test_collate_pads_to_fixed_length():
    batch = collate_codes([np.array([0, 1, 2], np.uint8), np.array([3] * 5, np.uint8)], seq_len=6)
    assert batch.dtype == torch.long and batch.shape == (2, 6)
    assert batch.tolist() == [[0, 1, 2, 5, 5, 5], [3, 3, 3, 3, 3, 5]]
    with pytest.raises(ValueError):
        collate_codes([np.zeros(7, np.uint8)], seq_len=6)
