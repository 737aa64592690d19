"""The streaming loader: exactly-once epochs, exact resume across ranks, workers and epochs, and
corrupt shards that are skipped and counted (or fatal under strict mode) without ever hanging."""

from __future__ import annotations

import json
import logging
import shutil
from itertools import islice
from pathlib import Path

import pytest
import torch

from megamerge.data import CorruptShardError, build_pretrain_loader
from tests.data_helpers import read_shards, run_prepare

RANKS, WORKERS = 2, 2


def _all_train_samples(corpus: Path) -> set[tuple[str, int]]:
    return {(meta["array"], meta["start"]) for meta, _ in read_shards(corpus, "train")}


def _epoch_samples(corpus: Path, **kwargs) -> list[tuple[str, int]]:
    seen = []
    for rank in range(RANKS):
        loader = build_pretrain_loader(corpus, "train", rank=rank, world_size=RANKS, num_workers=WORKERS,
                                       epochs=1, with_meta=True, **kwargs)  # fmt: skip
        seen += [(m["array"], m["start"]) for _, meta in loader for m in meta]
    return seen


def test_one_epoch_covers_every_sample_exactly_once(synthetic_corpus, tmp_path):
    expected = _all_train_samples(synthetic_corpus)
    seen = _epoch_samples(synthetic_corpus, micro_batch=4, seq_len=512)
    assert len(seen) == len(set(seen)) == len(expected) and set(seen) == expected
    # fewer shards (2) than rank x worker slots (4): shards are split into interleaved parts
    few = tmp_path / "few"
    run_prepare("--from-store", synthetic_corpus / "genomes.zarr", "--out", few, "--seq-len", "512",
                "--min-len", "64", "--samples-per-shard", "250", "--mix-shards", "1",
                "--max-n-frac", "0.5")  # fmt: skip
    assert len(json.loads((few / "manifest.json").read_text())["shards"]) == 2
    seen = _epoch_samples(few, micro_batch=3, seq_len=512, shuffle_buffer=7)
    assert len(seen) == len(set(seen)) and set(seen) == _all_train_samples(few) == expected


def _take(loader, count):
    return [(ids.clone(), [(m["array"], m["start"], m["crop"], m["rc"]) for m in meta])
            for ids, meta in islice(iter(loader), count)]  # fmt: skip


def _build(corpus, rank, **kwargs):
    return build_pretrain_loader(corpus, "train", rank=rank, world_size=RANKS, num_workers=WORKERS,
                                 micro_batch=4, seed=11, shuffle_buffer=32, with_meta=True,
                                 **kwargs)  # fmt: skip


@pytest.mark.timeout(300)
@pytest.mark.parametrize("augment", [False, True])
def test_resume_equals_uninterrupted_run_2_ranks_2_workers(synthetic_corpus, augment):
    options = ({"seq_len": 400, "random_crop": True, "reverse_complement": True} if augment
               else {"seq_len": 512})
    first, more = 31, 41  # odd: the resumed run starts on worker 1; ~22 batches per worker and epoch
    for rank in range(RANKS):
        reference = _take(_build(synthetic_corpus, rank, **options), first + more)
        loader = _build(synthetic_corpus, rank, **options)
        head = _take(loader, first)
        state = json.loads(json.dumps(loader.state_dict()))  # as stored in a checkpoint
        assert state["batches"] == first and state["samples"] == first * 4
        resumed = _build(synthetic_corpus, rank, **options)
        resumed.load_state_dict(state)
        tail = _take(resumed, more)
        assert resumed.epoch >= 1  # the resumed stream went past an epoch boundary
        assert len(head + tail) == len(reference)
        for (ids, meta), (ref_ids, ref_meta) in zip(head + tail, reference):
            assert meta == ref_meta
            assert (torch.equal(ids, ref_ids) and ids.dtype == torch.long
                    and ids.shape == (4, options["seq_len"]))
        if augment:
            assert {m[3] for _, meta in reference for m in meta} == {True, False}
            assert len({m[2] for _, meta in reference for m in meta}) > 10


def test_resume_in_process_loader_and_repeated_saves(synthetic_corpus):
    def build():
        return build_pretrain_loader(synthetic_corpus, micro_batch=5, num_workers=0, seed=3, with_meta=True)

    reference = _take(build(), 60)
    got, state = [], None
    for count in (7, 25, 28):  # save and restore twice
        loader = build()
        if state is not None:
            loader.load_state_dict(state)
        got += _take(loader, count)
        state = loader.state_dict()
    assert [meta for _, meta in got] == [meta for _, meta in reference]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(got, reference))


def test_resume_refuses_a_different_setup(synthetic_corpus):
    loader = _build(synthetic_corpus, 0, seq_len=512)
    _take(loader, 3)
    state = loader.state_dict()
    wider = build_pretrain_loader(synthetic_corpus, rank=0, world_size=4, num_workers=WORKERS, micro_batch=4,
                                  seed=11, shuffle_buffer=32)  # fmt: skip
    with pytest.raises(ValueError, match="world size 2, this run has 4"):
        wider.load_state_dict(state)
    other_workers = build_pretrain_loader(synthetic_corpus, rank=0, world_size=RANKS, num_workers=3,
                                          micro_batch=4, seed=11, shuffle_buffer=32)  # fmt: skip
    with pytest.raises(ValueError, match="workers: saved 2, now 3"):
        other_workers.load_state_dict(state)


def test_finite_loader_repeats_the_same_pass(synthetic_corpus):
    loader = build_pretrain_loader(synthetic_corpus, "train", micro_batch=8, num_workers=WORKERS, epochs=1,
                                   shuffle=False)  # fmt: skip
    first = [ids for ids in loader]
    second = [ids for ids in loader]
    assert len(first) == len(second) > 10 and all(torch.equal(a, b) for a, b in zip(first, second))
    assert loader.batches == 0  # a completed finite pass resets the state


def _damaged_copy(corpus: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    damaged = tmp_path / "damaged"
    shutil.copytree(corpus, damaged, ignore=shutil.ignore_patterns("genomes.zarr"))
    shards = sorted((damaged / "train").glob("*.tar"))
    truncated, flipped, missing = shards[1], shards[4], shards[7]
    truncated.write_bytes(truncated.read_bytes()[:5000])
    data = bytearray(flipped.read_bytes())
    data[2048 + 512 + 100] ^= 0x01  # in the 2nd sample's 512-byte sequence: only the CRC can tell
    flipped.write_bytes(bytes(data))
    missing.unlink()
    return damaged, [str(p) for p in (truncated, flipped, missing)]


@pytest.mark.timeout(120)
def test_corrupt_shards_are_skipped_counted_or_fatal(synthetic_corpus, tmp_path, caplog):
    damaged, bad = _damaged_copy(synthetic_corpus, tmp_path)
    caplog.set_level(logging.WARNING, logger="megamerge.data")
    loaders = [build_pretrain_loader(damaged, "train", rank=r, world_size=RANKS, num_workers=0, micro_batch=4,
                                     epochs=1, with_meta=True) for r in range(RANKS)]  # fmt: skip
    seen = [(m["array"], m["start"]) for loader in loaders for _, meta in loader for m in meta]
    assert len(seen) == len(set(seen))
    intact = {(m["array"], m["start"]) for m, _ in read_shards(synthetic_corpus, "train")
              if str(damaged / m["shard"]) not in bad}  # fmt: skip
    assert intact < set(seen) < _all_train_samples(synthetic_corpus)  # good shards whole, damaged ones cut
    messages = [r.getMessage() for r in caplog.records if "corrupt shard" in r.getMessage()]
    assert sorted(next(p for p in bad if p in msg) for msg in messages) == sorted(bad)
    assert any("CRC32" in msg for msg in messages)

    with pytest.raises(CorruptShardError, match="corrupt shard .*strict"):
        for rank in range(RANKS):
            list(build_pretrain_loader(damaged, "train", rank=rank, world_size=RANKS, num_workers=WORKERS,
                                       micro_batch=4, epochs=1, strict=True))  # fmt: skip


@pytest.mark.timeout(120)
def test_corrupt_shard_counts_survive_resume(synthetic_corpus, tmp_path):
    damaged, bad = _damaged_copy(synthetic_corpus, tmp_path)

    def build():
        return build_pretrain_loader(damaged, "train", rank=1, world_size=RANKS, num_workers=WORKERS,
                                     micro_batch=4, seed=5)  # fmt: skip

    reference = build()
    expected = [ids for ids in islice(iter(reference), 50)]
    loader = build()
    got = [ids for ids in islice(iter(loader), 21)]
    resumed = build()
    resumed.load_state_dict(loader.state_dict())
    got += [ids for ids in islice(iter(resumed), 29)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected)) and len(got) == 50
    assert resumed.corrupt_shards == reference.corrupt_shards > 0  # counted once, not again on replay
    assert set(reference.corrupt_shard_paths) <= set(bad)
    assert reference.corrupt_shard_names == set(reference.corrupt_shard_paths)  # each once, over the epochs
    older = loader.state_dict()  # as saved before the paths were kept: the counts alone carry over
    for worker in older["worker_states"]:
        worker["corrupt_shards"] = len(worker.pop("corrupt_paths"))
    from_older = build()
    from_older.load_state_dict(older)
    assert from_older.corrupt_shards == loader.corrupt_shards > 0


@pytest.mark.timeout(60)
def test_unreadable_corpus_fails_instead_of_spinning(synthetic_corpus, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_corpus, broken, ignore=shutil.ignore_patterns("genomes.zarr"))
    for shard in (broken / "train").glob("*.tar"):
        shard.write_bytes(b"\0" * 100)
    loader = build_pretrain_loader(broken, "train", micro_batch=4, num_workers=0)
    with pytest.raises(RuntimeError, match="read no samples"):
        next(iter(loader))
