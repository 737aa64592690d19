"""Species mixing and the soft-mask flags in the loader: drawn proportions within a derived bound,
species drawn from the global sample index, exact resume, disjoint ranks, soft-mask bits that stay
with their bases through crop and reverse complement, and one-line refusals of bad weights."""

from __future__ import annotations

import json
import logging
import math
import shutil
import tarfile
from collections import Counter
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from megamerge.data import build_pretrain_loader
from megamerge.data.augment import COMPLEMENT
from megamerge.data.shards import SOFTMASK_BIT, read_shard, split_shards
from megamerge.data.species_mixing import SpeciesDraw, SpeciesWeightsError
from megamerge.data.species_shards import read_species_shard
from megamerge.training.batches import global_indices
from megamerge.vocabulary import encode
from tests.mixed_corpus import write_mixed_corpus

SIZES = {"big": 600, "mid": 150, "small": 30}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_mixed_corpus(tmp_path_factory.mktemp("mixed"), SIZES, seq_len=64, shards=4, valid_samples=8)


@pytest.fixture(scope="module")
def even_corpus(tmp_path_factory):  # enough of each species that 2 ranks x 2 workers never wrap an epoch
    return write_mixed_corpus(tmp_path_factory.mktemp("even"), {"a": 300, "b": 300, "c": 300}, seq_len=32,
                              shards=6, seed=1)


def _rows(loader, batches: int) -> list[tuple]:
    """(key, species, codes, soft-mask) of every row of the first `batches` batches."""
    rows = []
    for ids, softmask, meta in islice(loader, batches):
        rows += [(m["key"], m["species"], ids[i].tolist(), softmask[i].tolist()) for i, m in enumerate(meta)]
    return rows


def test_drawn_proportions_match_the_weights_within_four_sigma(corpus, tmp_path):
    weights = {"big": 1.0, "mid": 1.0, "small": 2.0}
    path = tmp_path / "weights.json"
    path.write_text(json.dumps(weights))
    loader = build_pretrain_loader(corpus, micro_batch=8, num_workers=0, species_weights=str(path),
                                   with_softmask=True, with_meta=True)
    rows = _rows(loader, 50)
    n = len(rows)
    counts = Counter(species for _, species, _, _ in rows)
    assert dict(counts) == loader.samples_by_species
    # Each sample's species is an independent draw (a hash of its index) with P(s) = w_s / sum(w), so
    # a count is Binomial(n, p_s): mean n p_s, sd sqrt(n p_s (1 - p_s)). 4 sd bounds a miss at 6e-5 per
    # species; the natural mix (big 77%, small 4%) would miss 'small' by about 20 sd.
    for species, weight in weights.items():
        p = weight / sum(weights.values())
        assert abs(counts[species] - n * p) <= 4 * math.sqrt(n * p * (1 - p)), (
            species, counts[species], n * p)


def test_each_sample_species_is_drawn_from_its_global_index(even_corpus):
    """The index is the trainer's (batches.global_indices), whatever the worker or rank."""
    dp, micro = 2, 4
    draw = SpeciesDraw((("a", 1 / 3), ("b", 1 / 3), ("c", 1 / 3)), seed=5)
    for rank in range(dp):
        loader = build_pretrain_loader(even_corpus, micro_batch=micro, rank=rank, world_size=dp,
                                       num_workers=2, seed=5, species_weights="uniform", with_meta=True)
        for it, (_, meta) in enumerate(islice(loader, 6)):
            index = global_indices(it, 0, 1, dp, rank, micro)
            assert [m["species"] for m in meta] == [draw(int(i)) for i in index]


def test_resume_mid_epoch_gives_the_identical_sample_sequence(corpus):
    def build():
        return build_pretrain_loader(corpus, micro_batch=4, num_workers=2, seed=3, species_weights="uniform",
                                     random_crop=True, reverse_complement=True, seq_len=48,
                                     with_softmask=True, with_meta=True)

    reference = _rows(build(), 40)  # 160 samples: 'small' (30) wraps into later epochs
    first = build()
    head = _rows(first, 13)
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON round trip too
    resumed = build()
    resumed.load_state_dict(state)
    tail = _rows(resumed, 27)
    assert head + tail == reference
    assert resumed.samples_by_species == dict(Counter(species for _, species, _, _ in reference))
    plain = build_pretrain_loader(corpus, micro_batch=4, num_workers=2, seed=3)
    with pytest.raises(ValueError, match="species_weights"):
        plain.load_state_dict(state)


def test_two_data_parallel_ranks_draw_disjoint_samples(even_corpus):
    keys = []
    for rank in range(2):
        loader = build_pretrain_loader(even_corpus, micro_batch=5, rank=rank, world_size=2, num_workers=2,
                                       species_weights="uniform", with_meta=True)
        keys.append([m["key"] for _, meta in islice(loader, 20) for m in meta])  # 100 samples a rank
    assert len(set(keys[0])) == len(keys[0]) == 100 and len(set(keys[1])) == 100
    assert not set(keys[0]) & set(keys[1])


def _shard_bytes(corpus) -> dict[str, np.ndarray]:
    raw = {}
    for path in sorted((corpus / "train").glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".seq"):
                    raw[member.name[:-4]] = np.frombuffer(tar.extractfile(member).read(), np.uint8)
    return raw


@pytest.mark.parametrize("species_weights", [None, "by_bases"])
def test_softmask_stays_with_its_base_through_crop_and_reverse_complement(corpus, species_weights):
    raw = _shard_bytes(corpus)
    loader = build_pretrain_loader(corpus, micro_batch=8, num_workers=0, seq_len=40, random_crop=True,
                                   reverse_complement=True, with_softmask=True, with_meta=True,
                                   species_weights=species_weights, epochs=None)
    flips = Counter()
    for ids, softmask, meta in islice(loader, 10):
        assert softmask.dtype == torch.bool and softmask.shape == ids.shape and int(ids.max()) < 4
        for row, m in enumerate(meta):
            window = raw[m["key"]][m["crop"] : m["crop"] + 40]
            codes, masked = window & 7, (window & SOFTMASK_BIT) > 0
            if m["rc"]:
                codes, masked = COMPLEMENT[codes[::-1]], masked[::-1]
            assert ids[row].tolist() == codes.tolist() and softmask[row].tolist() == masked.tolist()
            flips[m["rc"]] += 1
    assert flips[True] and flips[False]
    # Batches without with_softmask are the plain LongTensor, its codes decoded alike.
    plain = next(iter(build_pretrain_loader(corpus, micro_batch=8, num_workers=0)))
    assert isinstance(plain, torch.Tensor) and int(plain.max()) < 4


@pytest.mark.parametrize(("weights", "message"), [
    ({"big": 1, "nosuch": 1}, "--species-weights: species 'nosuch' not in the corpus's train split"),
    ({"big": 1, "mid": -1}, "--species-weights: species 'mid' has weight -1"),
    ({"big": 0, "mid": 0}, "--species-weights: the weights sum to 0.0"),
    ({"big": 1, "mid": float("nan")}, "species 'mid' has weight nan"),
])  # fmt: skip
def test_bad_weights_are_refused_naming_the_flag_and_the_species(corpus, tmp_path, weights, message):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(weights))
    with pytest.raises(SpeciesWeightsError, match=message.replace("(", r"\(")):
        build_pretrain_loader(corpus, micro_batch=4, num_workers=0, species_weights=str(path))


def test_unusable_corpora_and_values_are_refused(corpus, tmp_path):
    with pytest.raises(SpeciesWeightsError, match="neither uniform nor by_bases nor an existing JSON file"):
        build_pretrain_loader(corpus, micro_batch=4, num_workers=0, species_weights="unifrom")
    with pytest.raises(SpeciesWeightsError,
                       match=r"'small' \(30\) has fewer train samples than the 32 loader slots"):
        build_pretrain_loader(corpus, micro_batch=4, rank=0, world_size=16, num_workers=2,
                              species_weights="uniform")
    old = tmp_path / "old"
    old.mkdir()
    manifest = json.loads((corpus / "manifest.json").read_text())
    for shard in manifest["shards"]:
        del shard["samples_by_species"]
        (old / shard["split"]).mkdir(exist_ok=True)
        (old / shard["path"]).symlink_to(corpus / shard["path"])
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SpeciesWeightsError, match="has no samples_by_species"):
        build_pretrain_loader(old, micro_batch=4, num_workers=0, species_weights="uniform")
    # without: as before
    assert next(iter(build_pretrain_loader(old, micro_batch=4, num_workers=0))).shape == (4, 64)


def test_species_reader_keeps_exactly_the_species_samples_and_reports_damage(corpus, tmp_path):
    entries = split_shards(corpus, "train")
    never = []
    for entry in entries:
        every = list(read_shard(entry, 0, 1, lambda *_: never.append(1)))
        for species in SIZES:
            mine = [s for s in every if s.meta["species"] == species]
            for part, parts in ((0, 1), (1, 3)):
                got = list(read_species_shard(entry, species, part, parts, lambda *_: never.append(1)))
                assert [(s.key, s.seq, s.meta) for s in got] == [(s.key, s.seq, s.meta)
                                                                 for s in mine[part::parts]]
    assert not never
    data = bytearray(Path(entries[0].path).read_bytes())
    damaged = {"truncated": data[: len(data) // 2], "checksum": data[:100] + b"X" + data[101:]}
    for name, payload in damaged.items():
        path = tmp_path / f"{name}.tar"
        path.write_bytes(bytes(payload))
        reports: list[str] = []
        got = list(read_species_shard(replace(entries[0], path=str(path)), "big", 0, 1,
                                      lambda entry, reason, into=reports: into.append(reason)))
        assert len(reports) == 1, (name, reports)
        assert ("checksum mismatch at byte 0" in reports[0]) if name == "checksum" else got


def test_a_damaged_shard_counts_once_across_species_streams_epochs_and_resume(corpus, tmp_path, caplog):
    damaged = tmp_path / "damaged"
    shutil.copytree(corpus, damaged)
    shard = Path(split_shards(damaged, "train")[0].path)  # holds every species (the fully mixed layout)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    caplog.set_level(logging.WARNING, logger="megamerge.data")

    def build():
        return build_pretrain_loader(damaged, micro_batch=8, num_workers=0, seed=2, species_weights="uniform")

    loader = build()
    list(islice(loader, 30))  # 240 samples: every sub-stream meets the shard, 'small' (30) in several epochs
    assert loader.corrupt_shards == 1 and loader.corrupt_shard_paths == [str(shard)]
    assert sum("corrupt shard" in r.getMessage() for r in caplog.records) == 1
    resumed = build()
    resumed.load_state_dict(json.loads(json.dumps(loader.state_dict())))
    list(islice(resumed, 30))
    assert resumed.corrupt_shards == 1 and resumed.corrupt_shard_paths == []


def test_prepared_corpus_softmask_matches_the_lower_case_of_the_input(synthetic_corpus):
    """The contract with data_prep: the loader's soft-mask flags are the input's lower case,
    base for base (GenomeStore gives the input's text back), and its codes the upper-cased bases."""
    from data_prep.genome_store import GenomeStore

    store = GenomeStore(synthetic_corpus / "genomes.zarr")
    loader = build_pretrain_loader(synthetic_corpus, micro_batch=8, num_workers=0, reverse_complement=True,
                                   with_softmask=True, with_meta=True, epochs=1, shuffle=False)
    masked = total = 0
    for ids, softmask, meta in loader:
        for row, m in enumerate(meta):
            text = store.sequence(m["species"], m["record"], m["start"], m["start"] + m["length"])
            codes, lower = encode(text), np.array([c.islower() for c in text])
            if m["rc"]:
                codes, lower = COMPLEMENT[codes[::-1]], lower[::-1]
            n = len(text)
            assert ids[row, :n].tolist() == codes.tolist() and softmask[row, :n].tolist() == lower.tolist()
            assert not softmask[row, n:].any()
            masked, total = masked + int(lower.sum()), total + n
    assert 0 < masked < total  # the synthetic genomes soft-mask their repeats
