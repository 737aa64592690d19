"""The per-worker side of the loader: an IterableDataset that turns one slot's sample stream into
ready batches, each tagged with where the slot stands so the main process can save exact state."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from megamerge.data.augment import AugmentSpec, augment
from megamerge.data.collate import collate_codes, collate_softmask
from megamerge.data.shards import CorruptShardError, ShardEntry, read_shard, split_softmask
from megamerge.data.species_mixing import SpeciesDraw, worker_sample_index
from megamerge.data.species_shards import read_species_shard
from megamerge.data.stream import Position, StreamSpec, Unit, slot_samples

log = logging.getLogger("megamerge.data")


@dataclass(frozen=True)
class LoaderConfig:
    """Everything that fixes the sample order; saved state is only valid for an equal config."""

    shards: tuple[ShardEntry, ...]
    micro_batch: int
    seq_len: int
    rank: int = 0
    world_size: int = 1
    workers: int = 1  # logical workers per rank (DataLoader num_workers, or 1 when it is 0)
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 1000
    epochs: int | None = None  # None: endless, epoch after epoch
    drop_last: bool = False
    random_crop: bool = False
    reverse_complement: bool = False
    strict: bool = False
    with_meta: bool = False
    with_softmask: bool = False  # batches also carry the soft-mask flags [B, N]
    # ((species, probability), ...) sorted: draw each sample's species (species_mixing.py); None:
    # read the split as one stream, as it was written
    species_weights: tuple[tuple[str, float], ...] | None = None

    def __post_init__(self):
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world size {self.world_size}")
        if self.micro_batch < 1 or self.seq_len < 1 or self.workers < 1:
            raise ValueError("micro_batch, seq_len and workers must be positive")
        if self.species_weights is not None and self.epochs is not None:
            raise ValueError("species weights draw from endless per-species streams: they need epochs=None")

    @property
    def stream(self) -> StreamSpec:
        return StreamSpec(self.shards, self.world_size * self.workers, self.seed, self.shuffle,
                          self.shuffle_buffer)

    def species_stream(self, species: str) -> StreamSpec:
        """The sub-stream of one species: the shards that hold it, and a share of the shuffle
        buffer, so that the buffers of all species together hold about shuffle_buffer samples."""
        shards = tuple(entry for entry in self.shards
                       if dict(entry.samples_by_species or ()).get(species, 0) > 0)
        buffer = math.ceil(self.shuffle_buffer / len(self.species_weights))
        return StreamSpec(shards, self.world_size * self.workers, self.seed, self.shuffle, buffer,
                          key=species)

    @property
    def augment(self) -> AugmentSpec:
        return AugmentSpec(self.seq_len, self.random_crop, self.reverse_complement, self.seed)


@dataclass
class WorkerState:
    epoch: int = 0
    consumed: int = 0  # samples of `epoch` already delivered
    # The damaged shards this worker met, each once however often it meets it again (every epoch, every
    # species sub-stream that reads it). A state saved before the paths were kept has only a count.
    corrupt_paths: list[str] = field(default_factory=list)
    corrupt_shards: int = 0  # counted by such an older state, paths unknown
    # Species mixing only (then epoch and consumed stay 0): the samples this worker has delivered,
    # and where each species' sub-stream stands, {species: [epoch, samples of it consumed]}.
    drawn: int = 0
    species: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class WorkerBatch:
    ids: torch.Tensor  # LongTensor [B, N]
    softmask: torch.Tensor  # BoolTensor [B, N]: bases that were lower case in the input
    species: list[str]  # per row
    worker: int  # logical worker
    state: WorkerState
    new_corrupt: list[str] = field(default_factory=list)
    meta: list[dict] | None = None


class _PlainSource:
    """One slot's stream of the whole split (stream.py): (epoch, sample) from `saved` on."""

    def __init__(self, config: LoaderConfig, slot: int, saved: WorkerState, report):
        self.position = Position(saved.epoch, saved.consumed)
        self.last = (saved.epoch, saved.consumed)

        def read_unit(unit: Unit):
            return read_shard(config.shards[unit.shard], unit.part, unit.parts, report(self.position))

        self.samples = slot_samples(config.stream, slot, self.position, config.epochs, read_unit)

    def __iter__(self):
        for epoch, consumed, sample in self.samples:
            self.last = (epoch, consumed)
            yield epoch, sample

    def state(self, corrupt_paths: list[str], older_corrupt_count: int) -> WorkerState:
        return WorkerState(self.last[0], self.last[1], corrupt_paths=list(corrupt_paths),
                           corrupt_shards=older_corrupt_count)


class _MixedSource:
    """One slot's species-weighted stream (species_mixing.py): for each sample a species drawn from
    its global index, then that species' next sample from its own sub-stream."""

    def __init__(self, config: LoaderConfig, worker: int, slot: int, saved: WorkerState, report):
        self.config, self.worker, self.slot, self.report = config, worker, slot, report
        self.drawn = saved.drawn
        self.positions = {species: list(at) for species, at in saved.species.items()}
        self.draw = SpeciesDraw(config.species_weights, config.seed)
        self.streams: dict = {}

    def _stream(self, species: str):
        config = self.config
        spec = config.species_stream(species)
        position = Position(*self.positions.get(species, (0, 0)))

        def read_unit(unit: Unit):
            return read_species_shard(spec.shards[unit.shard], species, unit.part, unit.parts,
                                      self.report(position))

        return slot_samples(spec, self.slot, position, None, read_unit)

    def __iter__(self):
        config = self.config
        while True:
            index = worker_sample_index(self.drawn, config.micro_batch, self.worker, config.workers,
                                        config.rank, config.world_size)
            species = self.draw(index)
            if species not in self.streams:
                self.streams[species] = self._stream(species)
            try:
                epoch, consumed, sample = next(self.streams[species])
            except RuntimeError as e:
                raise RuntimeError(f"species {species!r}: {e}") from None
            self.positions[species] = [epoch, consumed]
            self.drawn += 1
            yield epoch, sample

    def state(self, corrupt_paths: list[str], older_corrupt_count: int) -> WorkerState:
        return WorkerState(corrupt_paths=list(corrupt_paths), corrupt_shards=older_corrupt_count,
                           drawn=self.drawn,
                           species={species: list(at) for species, at in self.positions.items()})


class ShardStreamDataset(IterableDataset):
    def __init__(self, config: LoaderConfig, resume: tuple[WorkerState, ...], rotation: int = 0):
        super().__init__()
        self.config = config
        self.resume = resume
        # DataLoader always asks physical worker 0 first; rotating the logical ids makes the
        # first batch come from whichever worker was next when the state was saved.
        self.rotation = rotation

    def __iter__(self):
        config = self.config
        info = get_worker_info()
        physical, physical_count = (info.id, info.num_workers) if info else (0, 1)
        if physical_count != config.workers:
            raise RuntimeError(f"config has {config.workers} workers, DataLoader started {physical_count}")
        worker = (physical + self.rotation) % config.workers
        slot = config.rank * config.workers + worker
        saved = self.resume[worker]
        counted = list(saved.corrupt_paths)
        new_corrupt: list[str] = []

        def report(position: Position):
            def on_corrupt(entry: ShardEntry, reason: str) -> None:
                message = f"corrupt shard {entry.path}: {reason}"
                if config.strict:
                    raise CorruptShardError(message + " (strict data mode)")
                if position.replaying or entry.path in counted:  # counted before (the state was saved)
                    return
                counted.append(entry.path)
                new_corrupt.append(entry.path)
                log.warning("%s; skipping the rest of it", message)

            return on_corrupt

        if config.species_weights:
            source = _MixedSource(config, worker, slot, saved, report)
        else:
            source = _PlainSource(config, slot, saved, report)
        rows: list[tuple] = []
        for epoch, sample in source:
            # The shard bytes go through augment whole, so each soft-mask bit stays with its base.
            raw, offset, flipped = augment(np.frombuffer(sample.seq, np.uint8), sample.key, epoch,
                                           config.augment)
            meta = (dict(sample.meta, key=sample.key, crop=offset, rc=flipped, epoch=epoch)
                    if config.with_meta else None)
            rows.append((*split_softmask(raw), sample.meta.get("species"), meta))
            if len(rows) == config.micro_batch:
                yield self._batch(rows, worker, source.state(counted, saved.corrupt_shards), new_corrupt)
                rows, new_corrupt = [], []
        if rows and not config.drop_last:
            yield self._batch(rows, worker, source.state(counted, saved.corrupt_shards), new_corrupt)

    def _batch(self, rows: list[tuple], worker: int, state: WorkerState,
               new_corrupt: list[str]) -> WorkerBatch:
        codes, softmask, species, metas = zip(*rows)
        return WorkerBatch(
            ids=collate_codes(list(codes), self.config.seq_len),
            softmask=collate_softmask(list(softmask), self.config.seq_len),
            species=list(species),
            worker=worker,
            state=state,
            new_corrupt=list(new_corrupt),
            meta=list(metas) if self.config.with_meta else None,
        )
