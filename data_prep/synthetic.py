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
learned tokenizer merges repeats more than dense regions. Everything derives from --seed, so a given
command always writes the same genomes.

With --task species|motif it writes a labelled fine-tuning task instead (train/dev/test CSV, see
data_prep/synthetic_task.py) from the same species models:

    python data_prep/synthetic.py --task species --out runs/tasks/species --species 4 --seq-length 256
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make `data_prep` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.species_model import BASES, REGION_TYPES, generate_record, make_species
from data_prep.synthetic_task import write_task

LINE_WIDTH = 80


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
        (out / f"{model.name}.bed").write_text("#record\tstart\tend\ttype\tdetail\n"
                                               + "\n".join(bed_rows) + "\n")
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
                        help="also write <species>.regions.bed (record, start, end, class; "
                             "0-based half-open) beside each FASTA: the planted regions, for "
                             "tools/analyze_tokens.py --bed")
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
