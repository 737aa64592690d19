"""`--mock-data`: sequences generated on the fly, each a pure function of its global sample index.

Each of a few synthetic species owns a vocabulary of motifs (3-12 bases) drawn with Zipf
frequencies; a sequence concatenates motifs of one species and then mutates 2% of its bases. That
is structure a tokenizer can learn, and since sample i is the same whichever rank or micro-batch
reads it, runs with different data-parallel layouts see identical data (the DP-equivalence and
resume tests rely on it). Real pre-training uses `--data`.
"""

from __future__ import annotations

import numpy as np
import torch

N_SPECIES = 4
MOTIFS_PER_SPECIES = 48


def _species_motifs(seed: int, species: int) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, species, 7])
    return [rng.integers(0, 4, rng.integers(3, 13)).astype(np.int64) for _ in range(MOTIFS_PER_SPECIES)]


class MockGenome:
    def __init__(self, seq_len: int, seed: int = 0):
        self.seq_len = seq_len
        self.seed = seed
        self.motifs = [_species_motifs(seed, s) for s in range(N_SPECIES)]
        zipf = 1.0 / np.arange(1, MOTIFS_PER_SPECIES + 1)
        self.motif_p = zipf / zipf.sum()

    def sample(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(index)])
        motifs = self.motifs[int(index) % N_SPECIES]
        picks = rng.choice(MOTIFS_PER_SPECIES, size=self.seq_len // 3 + 1, p=self.motif_p)
        seq = np.concatenate([motifs[i] for i in picks])[: self.seq_len]
        mutate = rng.random(self.seq_len) < 0.02
        seq[mutate] = rng.integers(0, 4, int(mutate.sum()))
        return seq

    def batch(self, indices: torch.Tensor) -> torch.Tensor:  # [B] -> [B, seq_len]
        return torch.from_numpy(np.stack([self.sample(int(i)) for i in indices]))
