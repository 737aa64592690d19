"""The per-worker side of the loader: an IterableDataset that turns one slot's sample stream into
ready batches, each tagged with where the slot stands so the main process can save exact state."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from megamerge.data.augment import AugmentSpec, augment
from megamerge.data.collate import collate_codes
from megamerge.data.shards import CorruptShardError, ShardEntry, read_shard
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

    def __post_init__(self):
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world size {self.world_size}")
        if self.micro_batch < 1 or self.seq_len < 1 or self.workers < 1:
            raise ValueError("micro_batch, seq_len and workers must be positive")

    @property
    def stream(self) -> StreamSpec:
        return StreamSpec(self.shards, self.world_size * self.workers, self.seed, self.shuffle, self.shuffle_buffer)

    @property
    def augment(self) -> AugmentSpec:
        return AugmentSpec(self.seq_len, self.random_crop, self.reverse_complement, self.seed)


@dataclass
class WorkerState:
    epoch: int = 0
    consumed: int = 0  # samples of `epoch` already delivered
    corrupt_shards: int = 0


@dataclass
class WorkerBatch:
    ids: torch.Tensor  # LongTensor [B, N]
    worker: int  # logical worker
    state: WorkerState
    new_corrupt: list[str] = field(default_factory=list)
    meta: list[dict] | None = None


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
        position = Position(saved.epoch, saved.consumed)
        corrupt = saved.corrupt_shards
        new_corrupt: list[str] = []

        def on_corrupt(entry: ShardEntry, reason: str) -> None:
            nonlocal corrupt
            message = f"corrupt shard {entry.path}: {reason}"
            if config.strict:
                raise CorruptShardError(message + " (strict data mode)")
            if position.replaying:  # already counted before the state was saved
                return
            corrupt += 1
            new_corrupt.append(entry.path)
            log.warning("%s; skipping the rest of it", message)

        def read_unit(unit: Unit):
            return read_shard(config.shards[unit.shard], unit.part, unit.parts, on_corrupt)

        codes: list[np.ndarray] = []
        metas: list[dict] = []
        last = (saved.epoch, saved.consumed)
        for epoch, consumed, sample in slot_samples(config.stream, slot, position, config.epochs, read_unit):
            seq, offset, flipped = augment(np.frombuffer(sample.seq, np.uint8), sample.key, epoch, config.augment)
            codes.append(seq)
            if config.with_meta:
                metas.append(dict(sample.meta, key=sample.key, crop=offset, rc=flipped, epoch=epoch))
            last = (epoch, consumed)
            if len(codes) == config.micro_batch:
                yield self._batch(codes, metas, worker, last, corrupt, new_corrupt)
                codes, metas, new_corrupt = [], [], []
        if codes and not config.drop_last:
            yield self._batch(codes, metas, worker, last, corrupt, new_corrupt)

    def _batch(self, codes, metas, worker, last, corrupt, new_corrupt) -> WorkerBatch:
        return WorkerBatch(
            ids=collate_codes(codes, self.config.seq_len),
            worker=worker,
            state=WorkerState(last[0], last[1], corrupt),
            new_corrupt=list(new_corrupt),
            meta=metas if self.config.with_meta else None,
        )
