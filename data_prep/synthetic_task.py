"""Labelled synthetic fine-tuning tasks, from the same species models as data_prep/synthetic.py's
genomes (same --seed and species index give the same Markov chains, motifs and repeat statistics),
written as a task directory tools/finetune.py reads: train.csv, dev.csv, test.csv with columns
`sequence,label` (GUE's format).

    species   which species a chunk comes from (label 0..S-1): chunks cut from fresh genome records
              of each species, so a model pre-trained on those genomes has seen the distribution
              but never these sequences
    motif     whether a planted motif is present (label 1) or a shuffle of it, with the same base
              composition (label 0), in background sequence of a random species: order matters

Chunks with an N are dropped; soft-masked repeats are upper-cased. The classes are balanced.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from data_prep.species_model import BASES, generate_record, make_species, markov_batch, mutate

TASKS = ("species", "motif")
SPLIT_NAMES = ("train", "dev", "test")
MOTIF_LENGTH = 12
MOTIF_MUTATION_RATE = 0.08  # as synthetic.py plants motifs in its genomes


def species_examples(species: int, count: int, length: int, seed: int,
                     rng: np.random.Generator) -> tuple[list[str], list[int]]:
    """`count` N-free chunks per species, from records generated after the genome's own."""
    sequences, labels = [], []
    for index in range(species):
        model = make_species(f"synth_sp{index:02d}", np.random.default_rng([seed, index]))
        chunks: list[str] = []
        while len(chunks) < count:
            record, _ = generate_record(model, 4 * count * length, rng)
            text = record.decode().upper()
            chunks += [c for c in (text[i : i + length] for i in range(0, len(text) - length + 1, length))
                       if "N" not in c]
        picked = rng.choice(len(chunks), count, replace=False)
        sequences += [chunks[i] for i in picked]
        labels += [index] * count
    return sequences, labels


def motif_examples(species: int, count: int, length: int, seed: int,
                   rng: np.random.Generator) -> tuple[list[str], list[int]]:
    """`count` chunks with the motif and `count` with a composition-preserving shuffle of it."""
    if length < MOTIF_LENGTH:
        raise ValueError(f"--length {length}: the motif task needs at least {MOTIF_LENGTH} bases")
    models = [make_species(f"synth_sp{i:02d}", np.random.default_rng([seed, i])) for i in range(species)]
    motif = np.random.default_rng([seed, 1_000_003]).integers(0, 4, MOTIF_LENGTH).astype(np.uint8)
    sequences, labels = [], []
    for label in (1, 0):
        owners = rng.integers(0, species, count)
        for owner in range(species):
            for background in markov_batch(models[owner], [length] * int((owners == owner).sum()), rng):
                planted = mutate(motif, MOTIF_MUTATION_RATE, rng) if label else rng.permutation(motif)
                start = int(rng.integers(0, length - MOTIF_LENGTH + 1))
                background[start : start + MOTIF_LENGTH] = planted
                sequences.append(BASES[background].tobytes().decode())
                labels.append(label)
    return sequences, labels


def write_task(out: Path, task: str, species: int, length: int, sizes: tuple[int, int, int],
               seed: int) -> dict[str, int]:
    """Write OUT/{train,dev,test}.csv -> rows per split. `sizes` are examples per class per split."""
    if task not in TASKS:
        raise ValueError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    if species < (2 if task == "species" else 1) or min(sizes) < 1 or length < 1:
        raise ValueError("need --species >= 2 for the species task (>= 1 for motif), sizes >= 1, "
                         "--length >= 1")
    rng = np.random.default_rng([seed, 7_919, TASKS.index(task)])
    make = species_examples if task == "species" else motif_examples
    sequences, labels = make(species, sum(sizes), length, seed, rng)
    classes = sorted(set(labels))
    # Each class's examples, shuffled, are dealt to the splits, so every split is balanced.
    by_class = {c: rng.permutation([i for i, label in enumerate(labels) if label == c]) for c in classes}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    bounds = np.cumsum((0, *sizes))
    for split, lo, hi in zip(SPLIT_NAMES, bounds[:-1], bounds[1:], strict=True):
        picked = rng.permutation(np.concatenate([by_class[c][lo:hi] for c in classes]))
        with open(out / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sequence", "label"])
            writer.writerows((sequences[i], labels[i]) for i in picked)
        rows[split] = len(picked)
    return rows
