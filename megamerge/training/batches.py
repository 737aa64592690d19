"""Where micro-batches come from, and which global sample index each row carries.

The global index of row i of micro-step m of iteration `it` on data-parallel rank r is

    ((it * accumulation + m) * dp + r) * micro_batch + i

so it depends on the global batch layout, not on how it is split: 1 rank x 2 accumulation steps
and 2 ranks x 1 step number the same samples alike. The index keys every random draw of the
model (sample_noise) and, with --mock-data, the sequence itself.
"""

from __future__ import annotations

import logging

import torch

from megamerge.data.mock_data import MockGenome

log = logging.getLogger("megamerge.train")
VALID_INDEX_OFFSET = 1 << 40  # validation samples never collide with training indices


def global_indices(iteration: int, micro_step: int, accumulation: int, dp: int, dp_rank: int, micro: int):
    first = ((iteration * accumulation + micro_step) * dp + dp_rank) * micro
    return torch.arange(first, first + micro)


class TrainBatches:
    """Endless training micro-batches from a prepared corpus (--data) or --mock-data."""

    def __init__(self, args, micro: int, accumulation: int, dp: int, dp_rank: int):
        (self.args, self.micro, self.accumulation, self.dp,
         self.dp_rank) = args, micro, accumulation, dp, dp_rank
        self.mock = MockGenome(args.seq_length, args.seed) if args.mock_data else None
        self.loader = None
        self._iter = None
        if not self.mock:
            from megamerge.data import build_pretrain_loader

            self.loader = build_pretrain_loader(
                args.data, "train", micro_batch=micro, seq_len=args.seq_length, rank=dp_rank, world_size=dp,
                num_workers=args.num_workers, seed=args.seed, strict=args.strict_data, with_softmask=True,
                species_weights=getattr(args, "species_weights", None),
            )

    def next(self, iteration: int, micro_step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(input_ids [micro, N], global indices [micro], soft-masked bases [micro, N] bool or None)."""
        index = global_indices(iteration, micro_step, self.accumulation, self.dp, self.dp_rank, self.micro)
        if self.mock:
            return self.mock.batch(index), index, None
        if self._iter is None:
            self._iter = iter(self.loader)
        ids, softmask = next(self._iter)
        return ids, index[: ids.shape[0]], softmask

    @property
    def corrupt_shard_names(self) -> set[str]:
        return self.loader.corrupt_shard_names if self.loader else set()

    @property
    def samples_by_species(self) -> dict[str, int]:
        """This rank's training samples per species since the run began (none with --mock-data)."""
        return dict(self.loader.samples_by_species) if self.loader else {}

    def state_dict(self) -> dict:
        return self.loader.state_dict() if self.loader else {}

    def load_state_dict(self, state: dict) -> None:
        if self.loader and state:
            self.loader.load_state_dict(state)
            self._iter = None


class ValidBatches:
    """A fixed, ordered validation set: the first `eval_iters` micro-batches of the valid split."""

    def __init__(self, args, micro: int, dp: int, dp_rank: int):
        self.args, self.micro, self.dp, self.dp_rank = args, micro, dp, dp_rank
        self.mock = MockGenome(args.seq_length, args.seed) if args.mock_data else None
        self.available = True
        if not self.mock:
            from megamerge.data.shards import split_shards

            try:
                self.available = bool(split_shards(args.data, "valid"))
            except (FileNotFoundError, ValueError) as e:
                log.warning("no validation split in %s (%s); evaluation is skipped", args.data, e)
                self.available = False

    def __iter__(self):
        if self.mock:
            for i in range(self.args.eval_iters):
                index = VALID_INDEX_OFFSET + global_indices(0, i, 1, self.dp, self.dp_rank, self.micro)
                yield self.mock.batch(index), index
            return
        from megamerge.data import build_pretrain_loader

        loader = build_pretrain_loader(self.args.data, "valid", micro_batch=self.micro,
                                       seq_len=self.args.seq_length, rank=self.dp_rank, world_size=self.dp,
                                       num_workers=0, seed=self.args.seed)
        for i, ids in enumerate(loader):
            if i >= self.args.eval_iters:
                break
            index = VALID_INDEX_OFFSET + global_indices(0, i, 1, self.dp, self.dp_rank, self.micro)
            yield ids, index[: ids.shape[0]]
