"""The synthetic species behind data_prep/synthetic.py's genomes and data_prep/synthetic_task.py's
labelled tasks: each species an order-3 Markov chain around its own GC content, with planted motifs,
and the records drawn as a mix of region types (the annotation that tells repeats from background)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
MARKOV_ORDER = 3
N_STATES = 4**MARKOV_ORDER
REGION_TYPES = ("background", "motif", "tandem_repeat", "low_complexity", "gap")
REGION_PROBS = (0.45, 0.25, 0.15, 0.12, 0.03)  # per region, not per base


@dataclass
class SpeciesModel:
    name: str
    gc: float
    transitions: np.ndarray  # float64 [64, 4]: P(next base | previous 3 bases)
    motifs: list[np.ndarray]  # uint8 base indices


def make_species(name: str, rng: np.random.Generator) -> SpeciesModel:
    gc = float(rng.uniform(0.3, 0.65))
    base_prior = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
    # Dirichlet around the GC prior: each species gets its own context-dependent statistics.
    transitions = np.stack([rng.dirichlet(base_prior * rng.uniform(2.0, 8.0)) for _ in range(N_STATES)])
    motifs = [rng.integers(0, 4, int(rng.integers(8, 21))).astype(np.uint8) for _ in range(8)]
    return SpeciesModel(name, gc, transitions, motifs)


def markov_batch(model: SpeciesModel, lengths: list[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Sample many Markov segments at once: the loop runs over positions, vectorised over segments."""
    if not lengths:
        return []
    count, longest = len(lengths), max(lengths)
    cumulative = np.cumsum(model.transitions, axis=1)[:, :3]  # [64, 3]
    out = np.empty((count, longest), dtype=np.uint8)
    state = rng.integers(0, N_STATES, count)
    uniforms = rng.random((count, longest))
    for pos in range(longest):
        base = (uniforms[:, pos, None] > cumulative[state]).sum(axis=1)
        out[:, pos] = base
        state = (state * 4 + base) % N_STATES
    return [out[i, :length] for i, length in enumerate(lengths)]


def mutate(seq: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    seq = seq.copy()
    hit = rng.random(seq.size) < rate
    seq[hit] = rng.integers(0, 4, int(hit.sum()))
    return seq


def generate_record(model: SpeciesModel, length: int, rng: np.random.Generator):
    """-> (ASCII bytes of the record, list of (start, end, type, detail))."""
    pieces: list[tuple[str, np.ndarray | None, str, int]] = []  # (type, bases or None, detail, length)
    background_lengths: list[int] = []
    total = 0
    while total < length:
        kind = REGION_TYPES[rng.choice(len(REGION_TYPES), p=REGION_PROBS)]
        if kind == "background":
            size = int(rng.integers(300, 3000))
            background_lengths.append(size)
            pieces.append((kind, None, "", size))
        elif kind == "motif":
            index = int(rng.integers(len(model.motifs)))
            bases = mutate(model.motifs[index], 0.08, rng)
            pieces.append((kind, bases, f"motif{index}", bases.size))
        elif kind == "tandem_repeat":
            unit = rng.integers(0, 4, int(rng.integers(2, 61))).astype(np.uint8)
            copies = int(rng.integers(max(2, 40 // unit.size), max(3, 1500 // unit.size)))
            bases = mutate(np.tile(unit, copies), 0.02, rng)
            pieces.append((kind, bases, "unit=" + BASES[unit].tobytes().decode(), bases.size))
        elif kind == "low_complexity":
            alphabet = rng.choice(4, size=int(rng.integers(1, 3)), replace=False)
            bases = alphabet[rng.integers(0, alphabet.size, int(rng.integers(50, 500)))].astype(np.uint8)
            pieces.append((kind, bases, "alphabet=" + BASES[np.sort(alphabet)].tobytes().decode(),
                           bases.size))
        else:
            size = int(rng.integers(100, 3000))
            pieces.append((kind, None, "", size))
        total += pieces[-1][3]

    backgrounds = iter(markov_batch(model, background_lengths, rng))
    chunks, regions, pos = [], [], 0
    for kind, bases, detail, size in pieces:
        if kind == "background":
            text = BASES[next(backgrounds)]
        elif kind == "gap":
            text = np.full(size, ord("N"), dtype=np.uint8)
        else:
            text = BASES[bases]
            if kind in ("tandem_repeat", "low_complexity"):
                text = text + 32  # soft-mask repeats, as RepeatMasker output does
        chunks.append(text)
        regions.append((pos, pos + size, kind, detail))
        pos += size
    return np.concatenate(chunks).tobytes(), regions
