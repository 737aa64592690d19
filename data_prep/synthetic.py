#!/usr/bin/env python
"""Synthetic multi-species genomes with a ground-truth annotation of region types.

    python data_prep/synthetic.py --out data/synthetic --species 6 --length 2000000

Writes, per species, `<species>.fa.gz` (records `<species>_chr<i>`) and `<species>.bed`
(record, start, end, type, detail; 0-based half-open), plus `synthetic.json` with each species'
parameters and per-type base counts. Region types:

    background      high-entropy sequence from the species' own order-3 Markov chain
    motif           instances of the species' planted motifs (~8% mutated positions)
    tandem_repeat   a 2-60 bp unit repeated, 2% point mutations (soft-masked: lower case)
    low_complexity  runs over a 1-2 letter alphabet, e.g. poly-A or AT-rich (soft-masked)
    gap             runs of N, as in scaffold gaps (exercises the N-fraction filter)

With --regions-bed it also writes `<species>.regions.bed` beside each FASTA: the same intervals as
plain 4-column BED (record, start, end, class; no header), the ground truth tools/analyze_tokens.py
reads (background is the high-entropy class). The annotation is what lets us check whether a
learned tokenizer merges repeats more than dense regions. Everything derives from --seed, so a given command always writes the same genomes.

With --task species|motif it writes a labelled fine-tuning task instead (train/dev/test CSV, see
data_prep/synthetic_task.py) from the same species models:

    python data_prep/synthetic.py --task species --out runs/tasks/species --species 4 --seq-length 256
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
MARKOV_ORDER = 3
N_STATES = 4**MARKOV_ORDER
REGION_TYPES = ("background", "motif", "tandem_repeat", "low_complexity", "gap")
REGION_PROBS = (0.45, 0.25, 0.15, 0.12, 0.03)  # per region, not per base
LINE_WIDTH = 80


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
            pieces.append((kind, bases, "alphabet=" + BASES[np.sort(alphabet)].tobytes().decode(), bases.size))
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


def write_fasta(path: Path, records: list[tuple[str, bytes]], compress: bool) -> None:
    with gzip.open(path, "wb", compresslevel=4) if compress else open(path, "wb") as handle:
        for name, seq in records:
            handle.write(f">{name}\n".encode())
            lines = [seq[i : i + LINE_WIDTH] for i in range(0, len(seq), LINE_WIDTH)]
            handle.write(b"\n".join(lines) + b"\n")


def generate(out: Path, species: int, length: int, records: int, seed: int, compress: bool, progress: bool,
             regions_bed: bool = False):
    out.mkdir(parents=True, exist_ok=True)
    truth = {"seed": seed, "length_per_species": length, "records_per_species": records, "species": {}}
    for index in tqdm(range(species), desc="species", disable=not progress or None):
        rng = np.random.default_rng([seed, index])
        model = make_species(f"synth_sp{index:02d}", rng)
        fasta_records, bed_rows, region_rows = [], [], []
        type_bases = dict.fromkeys(REGION_TYPES, 0)
        record_lengths = np.full(records, length // records)
        record_lengths[: length % records] += 1
        for r, rec_len in enumerate(record_lengths):
            name = f"{model.name}_chr{r + 1}"
            seq, regions = generate_record(model, int(rec_len), rng)
            seq = seq[:rec_len]
            fasta_records.append((name, seq))
            for start, end, kind, detail in regions:
                if start >= rec_len:
                    break
                end = min(end, int(rec_len))
                bed_rows.append(f"{name}\t{start}\t{end}\t{kind}\t{detail}")
                region_rows.append(f"{name}\t{start}\t{end}\t{kind}")
                type_bases[kind] += end - start
        suffix = ".fa.gz" if compress else ".fa"
        write_fasta(out / f"{model.name}{suffix}", fasta_records, compress)
        (out / f"{model.name}.bed").write_text("#record\tstart\tend\ttype\tdetail\n" + "\n".join(bed_rows) + "\n")
        if regions_bed:  # plain BED for tools that take the fourth column as the region class
            (out / f"{model.name}.regions.bed").write_text("\n".join(region_rows) + "\n")
        truth["species"][model.name] = {
            "gc": round(model.gc, 4),
            "motifs": [BASES[m].tobytes().decode() for m in model.motifs],
            "bases_by_type": type_bases,
        }
    (out / "synthetic.json").write_text(json.dumps(truth, indent=1) + "\n")
    return truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write synthetic multi-species FASTA genomes plus a BED-like region annotation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--species", type=int, default=6, help="number of species")
    parser.add_argument("--length", type=int, default=2_000_000, help="bases per species")
    parser.add_argument("--records", type=int, default=4, help="records (chromosomes) per species")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--no-gzip", action="store_true", help="write plain .fa instead of .fa.gz")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--regions-bed", action="store_true",
                        help="also write <species>.regions.bed (record, start, end, class; 0-based half-open) "
                             "beside each FASTA: the planted regions, for tools/analyze_tokens.py --bed")
    task = parser.add_argument_group("labelled task (instead of genomes)")
    task.add_argument("--task", choices=("species", "motif"), default=None,
                      help="write a fine-tuning task to --out: which species a chunk is from, or whether a "
                           "planted motif is present (vs a shuffle of it)")
    task.add_argument("--seq-length", type=int, default=256, help="bases per task sequence")
    task.add_argument("--train-per-class", type=int, default=1000, help="training examples per class")
    task.add_argument("--eval-per-class", type=int, default=250, help="dev and test examples per class, each")
    args = parser.parse_args(argv)
    if args.task:
        return write_task_cli(parser, args)
    if args.species < 1 or args.records < 1 or args.length < args.records:
        parser.error("need --species >= 1, --records >= 1 and --length >= --records")
    truth = generate(args.out, args.species, args.length, args.records, args.seed, not args.no_gzip,
                     not args.no_progress, args.regions_bed)
    totals = dict.fromkeys(REGION_TYPES, 0)
    for info in truth["species"].values():
        for kind, count in info["bases_by_type"].items():
            totals[kind] += count
    summary = ", ".join(f"{kind} {count:,}" for kind, count in totals.items())
    print(f"{args.species} species x {args.length:,} bp -> {args.out} ({summary})")
    return 0


def write_task_cli(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if __package__ in (None, ""):  # run as a script: make `data_prep` importable
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from data_prep.synthetic_task import write_task

    sizes = (args.train_per_class, args.eval_per_class, args.eval_per_class)
    try:
        rows = write_task(args.out, args.task, args.species, args.seq_length, sizes, args.seed)
    except ValueError as e:
        parser.error(str(e))
    counts = ", ".join(f"{split} {n:,}" for split, n in rows.items())
    print(f"{args.task} task ({args.species} species, {args.seq_length} bp) -> {args.out} ({counts} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
