"""Small models and synthetic supervised tasks for the fine-tuning tests: tasks a randomly initialised
model learns in seconds, from base composition (GC content), which any pooled embedding exposes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from megamerge.models.carmania.config import CarmaniaConfig
from megamerge.models.carmania.model import Carmania
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.model import MergeDNA
from megamerge.portable import save_portable

SPLIT_SIZES = {"train": 96, "dev": 48, "test": 48}


def micro_mergedna(path: Path, seed: int = 0) -> Path:
    """A ~60k-parameter MergeDNA (every module present), saved as a portable directory."""
    torch.manual_seed(seed)
    cfg = MergeDNAConfig.from_preset("tiny", dim=32, n_heads=2, ffn_dim=64, latent_encoder_layers=2,
                                     latent_decoder_layers=1, local_decoder_layers=1, grouping_dim=16,
                                     window=8)
    return save_portable(MergeDNA(cfg), path)


def micro_carmania(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = CarmaniaConfig.from_preset("carmania-tiny", dim=32, n_heads=2, n_kv_heads=1, ffn_dim=64, n_layers=2,
                                     window=16)
    return save_portable(Carmania(cfg), path)


def gc_sequence(rng: np.random.Generator, gc: float, n: int) -> str:
    p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return "".join(rng.choice(list("ACGT"), size=n, p=p))


def write_rows(path: Path, rows: list[tuple], header=("sequence", "label")) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writerow(header)
        writer.writerows(rows)


def gc_task(path: Path, kind: str = "binary", seed: int = 0, sizes: dict | None = None) -> Path:
    """kind: binary (GC 0.3 vs 0.7), three (0.25 / 0.5 / 0.75), regression (label = GC fraction
    drawn in [0.2, 0.8]), per_base (alternating AT-rich and GC-rich stretches; label 1 inside
    GC-rich ones). Lengths vary (24-48) so batches are padded."""
    rng = np.random.default_rng(seed)
    for split, n in (sizes or SPLIT_SIZES).items():
        rows = []
        for _ in range(n):
            length = int(rng.integers(24, 49))
            if kind == "binary":
                y = int(rng.integers(2))
                rows.append((gc_sequence(rng, 0.3 + 0.4 * y, length), y))
            elif kind == "three":
                y = int(rng.integers(3))
                rows.append((gc_sequence(rng, 0.25 + 0.25 * y, length), y))
            elif kind == "regression":
                gc = float(rng.uniform(0.2, 0.8))
                rows.append((gc_sequence(rng, gc, length), f"{gc:.4f}"))
            elif kind == "per_base":
                seq, labels, rich = "", "", bool(rng.integers(2))
                while len(seq) < length:
                    run = int(rng.integers(6, 13))
                    seq += gc_sequence(rng, 0.9 if rich else 0.1, run)
                    labels += ("1" if rich else "0") * run
                    rich = not rich
                rows.append((seq[:length], labels[:length]))
            else:
                raise ValueError(kind)
        write_rows(path / f"{split}.csv", rows)
    return path
