"""The resumable pre-training loader: a DataLoader over `ShardStreamDataset` plus exact state.

Order. Each rank has W logical workers (W = num_workers, or 1 when num_workers is 0), i.e.
world_size * W slots in all (see `stream.py`). Worker w of rank r produces whole micro-batches
from slot r*W + w, and the DataLoader hands them out round robin over the workers (it skips a
worker only once that worker's finite stream is exhausted).

State. After every batch the main process records, per logical worker, (epoch, samples consumed
in that epoch, corrupt shards seen), plus which worker is next. `state_dict()` returns that;
after `load_state_dict()` the next `iter()` restarts each worker at its epoch, skips the samples
it had delivered (reading, not decoding, them: cost grows with the position inside the current
epoch) and rotates worker ids so the round robin continues where it stopped. The batches that
follow are exactly those the uninterrupted run would have produced, on every rank.

Species. Every batch says which species each row came from; `samples_by_species` counts them
since the start of the run (saved with the state). With `species_weights` the loader draws each
sample's species by weight instead of reading the split as written (species_mixing.py); each
worker's state then holds where each species' sub-stream stands.

Changing the setup. The order depends on the data-parallel world size, the number of workers,
the micro-batch size, the seed and the shard set, so a state saved under different values is
refused with a message saying which one differs (the trainer may then start the data stream
afresh instead of loading it). Continuing "approximately" is deliberately not offered.
"""

from __future__ import annotations

import signal
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from megamerge.data.dataset import LoaderConfig, ShardStreamDataset, WorkerBatch, WorkerState
from megamerge.data.shards import fingerprint, load_manifest, split_shards
from megamerge.data.species_mixing import (
    check_enough_samples,
    resolve_species_weights,
    train_samples_by_species,
)

STATE_FORMAT = "megamerge.data.PretrainLoader"
STATE_VERSION = 1
# The fields whose change alters the sample order (or the samples themselves).
ORDER_FIELDS = (
    "world_size", "rank", "workers", "micro_batch", "seq_len", "seed", "shuffle", "shuffle_buffer",
    "epochs", "drop_last", "random_crop", "reverse_complement", "species_weights",
)  # fmt: skip


def _unwrap(batch):  # module level so DataLoader can pickle it for spawned workers
    return batch


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def _leave_stop_signals_to_the_rank(worker_id: int) -> None:
    """worker_init_fn. SLURM (scancel, preemption, `--signal=USR1@T`) and `kill` of a process group
    signal every process of a rank, workers included. A worker killed by them makes its rank fail
    with "DataLoader worker ... is killed by signal" before it can save; ignoring them leaves the
    stop to the rank, which saves at the next iteration and then shuts its workers down itself."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _order_value(config: dict, name: str):
    """An ORDER_FIELDS value as a state holds it: species weights as a {species: probability}
    dict (None when off, and in states saved before they existed)."""
    value = config.get(name)
    return dict(value) if name == "species_weights" and value is not None else value


class PretrainLoader:
    """Iterate for LongTensor [B, N] batches; with `with_softmask` and/or `with_meta`, for tuples
    (batch, soft-mask BoolTensor [B, N], metadata), holding those of the last two asked for."""

    def __init__(self, config: LoaderConfig, num_workers: int = 0, prefetch_factor: int = 4,
                 pin_memory: bool = False, multiprocessing_context=None):  # fmt: skip
        if config.workers != max(1, num_workers):
            raise ValueError("config.workers must equal max(1, num_workers)")
        self.config = config
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.multiprocessing_context = multiprocessing_context
        self.dataset_fingerprint = fingerprint(config.shards)
        self._reset_progress()

    def _reset_progress(self) -> None:
        self.workers = [WorkerState() for _ in range(self.config.workers)]
        self.next_worker = 0
        self.batches = 0
        self.samples = 0
        self.samples_by_species: dict[str, int] = {}
        self.corrupt_shard_paths: list[str] = []

    @property
    def epoch(self) -> int:
        """The oldest epoch any worker of this rank is still in."""
        return min(state.epoch for state in self.workers)

    @property
    def corrupt_shard_names(self) -> set[str]:
        """The damaged shards this rank's workers have met, each once, by path. A worker state saved
        before the paths were kept names the shards it had counted by rank, worker and number."""
        names = {path for state in self.workers for path in state.corrupt_paths}
        for worker, state in enumerate(self.workers):
            names.update(f"(unnamed {i} of data-parallel rank {self.config.rank}, worker {worker})"
                         for i in range(state.corrupt_shards))  # fmt: skip
        return names

    @property
    def corrupt_shards(self) -> int:
        return len(self.corrupt_shard_names)

    def __iter__(self):
        dataset = ShardStreamDataset(self.config, tuple(self.workers), self.next_worker)
        if self.num_workers == 0:
            source = iter(dataset)
        else:
            source = iter(
                DataLoader(
                    dataset,
                    batch_size=None,
                    num_workers=self.num_workers,
                    collate_fn=_unwrap,
                    worker_init_fn=_leave_stop_signals_to_the_rank,
                    prefetch_factor=self.prefetch_factor,
                    pin_memory=self.pin_memory,
                    multiprocessing_context=self.multiprocessing_context,
                )
            )
        try:
            for batch in source:
                self._advance(batch)
                extras = ((batch.softmask,) if self.config.with_softmask else ()) + (
                    (batch.meta,) if self.config.with_meta else ())
                yield (batch.ids, *extras) if extras else batch.ids
        finally:
            del source  # shuts the worker processes down even if the caller stopped early
        if self.config.epochs is not None:  # a finite pass ran to the end: the next one starts afresh
            self._reset_progress()

    def _advance(self, batch: WorkerBatch) -> None:
        self.workers[batch.worker] = batch.state
        self.next_worker = (batch.worker + 1) % self.config.workers
        self.batches += 1
        self.samples += batch.ids.shape[0]
        for species in batch.species:
            self.samples_by_species[species] = self.samples_by_species.get(species, 0) + 1
        self.corrupt_shard_paths.extend(batch.new_corrupt)

    # ------------------------------------------------------------------------------------- state

    def state_dict(self) -> dict:
        config = asdict(self.config)
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "dataset": self.dataset_fingerprint,
            **{name: _order_value(config, name) for name in ORDER_FIELDS},
            "worker_states": [asdict(state) for state in self.workers],
            "next_worker": self.next_worker,
            "batches": self.batches,
            "samples": self.samples,
            "samples_by_species": dict(self.samples_by_species),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a {STATE_FORMAT} v{STATE_VERSION} state: {state.get('format')!r}")
        if state["world_size"] != self.config.world_size:
            raise ValueError(
                f"data loader state was saved with data-parallel world size {state['world_size']}, "
                f"this run has {self.config.world_size}. Shards are assigned to (rank, worker) slots, "
                "so exact resume needs the same world size; start the data stream afresh instead."
            )
        if state["dataset"] != self.dataset_fingerprint:
            raise ValueError("data loader state belongs to a different shard set (the corpus was re-cut)")
        current = {name: _order_value(asdict(self.config), name) for name in ORDER_FIELDS}
        saved = {name: _order_value(state, name) for name in ORDER_FIELDS}
        differing = [name for name in ORDER_FIELDS if saved[name] != current[name]]
        if differing:
            details = ", ".join(f"{name}: saved {saved[name]!r}, now {current[name]!r}" for name in differing)
            raise ValueError(f"data loader state does not match this loader ({details})")
        self.workers = [WorkerState(**worker) for worker in state["worker_states"]]
        self.next_worker = state["next_worker"]
        self.batches = state["batches"]
        self.samples = state["samples"]
        # counted afresh from an older state
        self.samples_by_species = dict(state.get("samples_by_species", {}))
        self.corrupt_shard_paths = []


def build_pretrain_loader(
    data_dir: str | Path,
    split: str = "train",
    micro_batch: int = 8,
    seq_len: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    num_workers: int = 2,
    seed: int = 0,
    shuffle: bool | None = None,
    shuffle_buffer: int = 1000,
    epochs: int | None = -1,
    drop_last: bool = False,
    random_crop: bool = False,
    reverse_complement: bool = False,
    strict: bool = False,
    with_meta: bool = False,
    with_softmask: bool = False,
    species_weights: str | dict | None = None,
    **loader_kwargs,
) -> PretrainLoader:
    """Loader over `data_dir/{split}` shards of a prepared corpus.

    Defaults: seq_len from the manifest; rank / world_size from torch.distributed when it is
    initialised (else 0 / 1); train shuffles and runs forever (epochs=None), other splits are one
    ordered pass (epochs=1). `strict` raises on a corrupt shard instead of skipping it.
    `species_weights` ("uniform", "by_bases", a JSON file's path or a {species: weight} dict)
    draws each sample's species by weight (species_mixing.py; endless streams only).
    """
    if rank is None or world_size is None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if distributed else 0 if rank is None else rank
        world_size = (torch.distributed.get_world_size() if distributed
                      else 1 if world_size is None else world_size)
    if seq_len is None:
        seq_len = int(load_manifest(data_dir)["parameters"]["seq_len"])
    training = split == "train"
    shards = tuple(split_shards(data_dir, split))
    workers = max(1, num_workers)
    weights = None
    if species_weights is not None:
        available = train_samples_by_species(shards)
        weights = resolve_species_weights(species_weights, available)
        check_enough_samples(weights, available, world_size * workers)
    config = LoaderConfig(
        shards=shards,
        micro_batch=micro_batch,
        seq_len=seq_len,
        rank=rank,
        world_size=world_size,
        workers=workers,
        seed=seed,
        shuffle=training if shuffle is None else shuffle,
        shuffle_buffer=shuffle_buffer,
        epochs=(None if training else 1) if epochs == -1 else epochs,
        drop_last=drop_last,
        random_crop=random_crop,
        reverse_complement=reverse_complement,
        strict=strict,
        with_meta=with_meta,
        with_softmask=with_softmask,
        species_weights=weights,
    )
    return PretrainLoader(config, num_workers=num_workers, **loader_kwargs)



