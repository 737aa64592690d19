"""Species mixing (train.py --species-weights): which species each training sample comes from.

Large genomes dominate a multi-species corpus by bases. With weights, the loader no longer reads
one stream of mixed shards; instead each (rank, worker) slot keeps one sub-stream per species --
the shards whose manifest entry lists that species (`samples_by_species`), cut into units and
shuffled as stream.py cuts the whole split, keeping only that species' samples -- and for each
sample it draws a species by weight, then takes that species' next sample.

The draw is a hash of (seed, global sample index), the index the trainer gives the sample
(training/batches.py: ((iteration * accumulation + micro_step) * dp + rank) * micro + row). It
depends on nothing a resume or another rank could change, so a resumed run draws the same species
and the sub-streams (disjoint between slots, as the plain stream is) stay disjoint between ranks.

Cost. A sub-stream reads every sample of the shards that list its species to keep its own
(species_shards.py walks past the others cheaply, but still walks), so a drawn sample costs
sum_s p_s * (samples in the shards listing s) / (samples of s) samples walked: small species in
widely mixed shards are the expensive ones (BENCHMARKS.md, Species mixing). A damaged shard that
several species' sub-streams read is reported and counted once per worker (dataset.py).
Each species' shuffle buffer holds shuffle_buffer / (number of species) samples, so that all of
them together hold about what the plain stream's one buffer does.

Weights come from a JSON file {species: weight} or a shorthand: `uniform` (every train species
alike) or `by_bases` (each species by its train samples, i.e. its share of the train bases: every
sample but a record's tail is seq_len bases long).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

FLAG = "--species-weights"
SHORTHANDS = ("uniform", "by_bases")


class SpeciesWeightsError(ValueError):
    """A --species-weights value that cannot be used; the message names the flag and the species."""


def train_samples_by_species(shards: Sequence) -> dict[str, int]:
    """{species: train samples} summed over ShardEntry.samples_by_species; refuses a manifest
    written before prepare.py recorded it (the per-species sub-streams need it)."""
    totals: dict[str, int] = {}
    for entry in shards:
        if entry.samples_by_species is None:
            raise SpeciesWeightsError(
                f"{FLAG}: the corpus manifest's shard {entry.path} has no samples_by_species (written by an "
                "older data_prep/prepare.py); re-cut the shards with prepare.py --from-store to use species "
                "weights")
        for species, count in entry.samples_by_species:
            totals[species] = totals.get(species, 0) + count
    return totals


def resolve_species_weights(value: str | dict, available: dict[str, int]) -> tuple[tuple[str, float], ...]:
    """A --species-weights value (a shorthand, a JSON file's path, or a dict) and the train samples
    per species -> ((species, probability), ...) sorted by species, zero weights left out."""
    if isinstance(value, dict):
        weights = value
    elif value == "uniform":
        weights = dict.fromkeys(available, 1.0)
    elif value == "by_bases":
        weights = {species: float(count) for species, count in available.items()}
    else:
        weights = _read_weights_file(value)
    unknown = sorted(set(weights) - set(available))
    if unknown:
        raise SpeciesWeightsError(f"{FLAG}: species {', '.join(map(repr, unknown))} not in the corpus's "
                                  f"train split (its species: {', '.join(sorted(available))})")
    for species, weight in weights.items():
        if (isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight)
                or weight < 0):
            raise SpeciesWeightsError(f"{FLAG}: species {species!r} has weight {weight!r}; weights must be "
                                      "finite numbers >= 0")
    total = float(sum(weights.values()))
    if total <= 0:
        raise SpeciesWeightsError(f"{FLAG}: the weights sum to {total}; give at least one species a "
                                  "positive weight")
    empty = sorted(s for s, w in weights.items() if w > 0 and available[s] == 0)
    if empty:
        raise SpeciesWeightsError(f"{FLAG}: species {', '.join(map(repr, empty))} has a positive weight "
                                  "but no train samples")
    return tuple((species, weights[species] / total) for species in sorted(weights) if weights[species] > 0)


def _read_weights_file(value: str) -> dict:
    path = Path(value)
    if not path.is_file():
        raise SpeciesWeightsError(f"{FLAG} {value}: neither {' nor '.join(SHORTHANDS)} nor an existing "
                                  "JSON file")
    try:
        weights = json.loads(path.read_text())
    except ValueError as e:
        raise SpeciesWeightsError(f"{FLAG} {value}: not valid JSON ({e})") from None
    if not isinstance(weights, dict) or not weights:
        raise SpeciesWeightsError(f"{FLAG} {value}: must hold a non-empty JSON object {{species: weight}}")
    return weights


def check_enough_samples(weights: tuple[tuple[str, float], ...], available: dict[str, int],
                         slots: int) -> None:
    """Every drawn species must give each of the `slots` (ranks x workers) sub-streams a sample."""
    short = [f"{species!r} ({available[species]})" for species, _ in weights if available[species] < slots]
    if short:
        raise SpeciesWeightsError(f"{FLAG}: species {', '.join(short)} has fewer train samples than the "
                                  f"{slots} loader slots (data-parallel ranks x --num-workers), so some "
                                  "slot would draw it and find none; give it weight 0 or use fewer workers")


class SpeciesDraw:
    """species = draw(global sample index): inverse CDF of the weights at a keyed uniform."""

    def __init__(self, weights: tuple[tuple[str, float], ...], seed: int):
        self.species = [species for species, _ in weights]
        self.cumulative = []
        running = 0.0
        for _, probability in weights:
            running += probability
            self.cumulative.append(running)
        self.seed = seed

    def __call__(self, index: int) -> str:
        digest = hashlib.blake2b(f"{self.seed}:species:{index}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "little") / 2.0**64 * self.cumulative[-1]  # [0, total)
        return self.species[min(bisect.bisect_right(self.cumulative, u), len(self.species) - 1)]


def worker_sample_index(drawn: int, micro_batch: int, worker: int, workers: int, rank: int,
                        world_size: int) -> int:
    """The global sample index of this worker's `drawn`-th sample (0-based). Worker w of a rank
    makes that rank's micro-batches w, w + W, ... (the DataLoader's round robin), and micro-batch b
    of rank r holds the samples (b * world_size + r) * micro_batch + row."""
    own_batch, row = divmod(drawn, micro_batch)
    batch = own_batch * workers + worker
    return (batch * world_size + rank) * micro_batch + row
