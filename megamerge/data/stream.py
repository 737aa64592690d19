"""The deterministic sample order of one (rank, worker) slot.

For epoch e, all shards are permuted with a generator seeded by (seed, e). The permuted list is
cut into "units" -- whole shards, or, when there are fewer shards than slots, interleaved parts of
shards (part p of P takes samples p, p+P, ...) -- and slot k of S takes units k, k+S, k+2S, ...
The slot's samples then pass through a shuffle buffer seeded by (seed, e, k) whose random choices
never look at sample contents. So the stream of a slot is a pure function of (shard list, seed,
epoch, slot, number of slots), which is what makes exact resume possible: a slot restarts its
epoch and skips the samples it had already produced.

Each slot walks its own sequence of epochs; over one epoch the S slots together read every
sample of the split exactly once.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from megamerge.data.shards import RawSample, ShardEntry


@dataclass(frozen=True)
class Unit:
    shard: int  # index into the shard list
    part: int
    parts: int


@dataclass(frozen=True)
class StreamSpec:
    shards: tuple[ShardEntry, ...]
    n_slots: int
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 1000
    # Names a sub-stream (species_mixing.py: one per species) so that its shuffles differ from the
    # other sub-streams'; "" is the plain stream of the whole split.
    key: str = ""

    def random_key(self, epoch: int) -> list[int]:
        if not self.key:
            return [self.seed, epoch]
        return [self.seed, epoch,
                int.from_bytes(hashlib.blake2b(self.key.encode(), digest_size=8).digest(), "little")]


def epoch_units(spec: StreamSpec, epoch: int) -> list[Unit]:
    order = list(range(len(spec.shards)))
    if spec.shuffle:
        order = np.random.default_rng(spec.random_key(epoch)).permutation(len(order)).tolist()
    parts = math.ceil(spec.n_slots / len(order))  # > 1 only when shards are fewer than slots
    return [Unit(shard, part, parts) for shard in order for part in range(parts)]


def slot_units(spec: StreamSpec, epoch: int, slot: int) -> list[Unit]:
    return epoch_units(spec, epoch)[slot :: spec.n_slots]


def shuffle_buffer(samples: Iterable, size: int, rng: random.Random) -> Iterator:
    """Reservoir-style buffer: emit a random resident once it is full, then drain shuffled."""
    buffer: list = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        index = rng.randrange(size)
        yield buffer[index]
        buffer[index] = sample
    rng.shuffle(buffer)
    yield from buffer


def slot_epoch(
    spec: StreamSpec, epoch: int, slot: int, read_unit: Callable[[Unit], Iterator[RawSample]]
) -> Iterator[RawSample]:
    samples = (sample for unit in slot_units(spec, epoch, slot) for sample in read_unit(unit))
    if not spec.shuffle or spec.shuffle_buffer <= 1:
        return samples
    rng = random.Random(f"{spec.seed}/{epoch}/{slot}" + (f"/{spec.key}" if spec.key else ""))
    return shuffle_buffer(samples, spec.shuffle_buffer, rng)


class Position:
    """Where a slot stands: `consumed` samples of `epoch` already delivered. `replaying` is true
    while a resumed slot re-reads what it had delivered before, so damage is not reported twice."""

    def __init__(self, epoch: int = 0, consumed: int = 0):
        self.epoch = epoch
        self.consumed = consumed
        self.replaying = False


def slot_samples(
    spec: StreamSpec,
    slot: int,
    start: Position,
    epochs: int | None,
    read_unit: Callable[[Unit], Iterator[RawSample]],
) -> Iterator[tuple[int, int, RawSample]]:
    """(epoch, position within epoch (1-based), sample) from `start` on, for `epochs` epochs in
    total (None: forever)."""
    epoch, skip = start.epoch, start.consumed
    while epochs is None or epoch < epochs:
        start.replaying = skip > 0
        position = 0
        for sample in slot_epoch(spec, epoch, slot, read_unit):
            position += 1
            if position <= skip:
                start.replaying = position < skip
                continue
            yield epoch, position, sample
        if position == 0 and epochs is None:
            # Looping on would spin forever without yielding: fail loudly instead.
            raise RuntimeError(
                f"slot {slot} read no samples in epoch {epoch}: all of its shards are empty or corrupt"
            )
        epoch, skip = epoch + 1, 0
