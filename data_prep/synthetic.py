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

With --variants N it also writes `<species>.variants.vcf` beside each FASTA: N single-base variants
with ground truth (VCF 4.2, INFO MOTIF=1 for one that breaks a planted motif instance, MOTIF=0 for one
in unconstrained background; see data_prep/synthetic_variants.py), the input of
benchmarks/zero_shot.py and of tools/score_variants.py --labels MOTIF:

    python data_prep/synthetic.py --out data/zero_shot --species 1 --variants 2000

Files appear only when the whole run succeeded.

With --task species|motif it writes a labelled fine-tuning task instead (train/dev/test CSV, see
data_prep/synthetic_task.py) from the same species models:

    python data_prep/synthetic.py --task species --out runs/tasks/species --species 4 --seq-length 256
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make `data_prep` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.species_model import BASES, REGION_TYPES, SpeciesModel, generate_record, make_species
from data_prep.synthetic_task import write_task
from data_prep.synthetic_variants import GenomeRecord, write_variants

LINE_WIDTH = 80
VARIANTS_SUFFIX = ".variants.vcf"


def write_fasta(path: Path, records: list[tuple[str, bytes]], compress: bool) -> None:
    with gzip.open(path, "wb", compresslevel=4) if compress else open(path, "wb") as handle:
        for name, seq in records:
            handle.write(f">{name}\n".encode())
            lines = [seq[i : i + LINE_WIDTH] for i in range(0, len(seq), LINE_WIDTH)]
            handle.write(b"\n".join(lines) + b"\n")


@contextlib.contextmanager
def staged(out: Path):
    """A hidden folder in `out` to write a run's files into; they are moved into `out` only when the whole
    run succeeded, so a failed run (e.g. --variants asking for more than a genome holds) leaves nothing
    half-written."""
    stage = out / ".synthetic.partial"
    shutil.rmtree(stage, ignore_errors=True)  # left by a run that was killed
    stage.mkdir(parents=True)
    try:
        yield stage
        for path in sorted(stage.iterdir()):
            path.replace(out / path.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def species_genome(model: SpeciesModel, length: int, records: int, rng: np.random.Generator
                   ) -> list[GenomeRecord]:
    """`records` records of `model`'s species, `length` bases in all, each with the regions that tile it."""
    record_lengths = np.full(records, length // records)
    record_lengths[: length % records] += 1
    genome = []
    for r, rec_len in enumerate(record_lengths):
        seq, regions = generate_record(model, int(rec_len), rng)
        kept = [(start, min(end, int(rec_len)), kind, detail)  # the last region is cut at the record's end
                for start, end, kind, detail in regions if start < rec_len]
        genome.append(GenomeRecord(f"{model.name}_chr{r + 1}", seq[:rec_len], kept))
    return genome


def generate(out: Path, species: int, length: int, records: int, seed: int, compress: bool, progress: bool,
             regions_bed: bool = False, variants: int = 0):
    truth = {"seed": seed, "length_per_species": length, "records_per_species": records,
             **({"variants_per_species": variants} if variants else {}), "species": {}}
    with staged(out) as stage:
        for index in tqdm(range(species), desc="species", disable=not progress or None):
            rng = np.random.default_rng([seed, index])
            model = make_species(f"synth_sp{index:02d}", rng)
            genome = species_genome(model, length, records, rng)
            fasta_name = model.name + (".fa.gz" if compress else ".fa")
            write_fasta(stage / fasta_name, [(record.name, record.seq) for record in genome], compress)
            regions = [(record.name, *region) for record in genome for region in record.regions]
            (stage / f"{model.name}.bed").write_text("#record\tstart\tend\ttype\tdetail\n" + "".join(
                f"{name}\t{start}\t{end}\t{kind}\t{detail}\n" for name, start, end, kind, detail in regions))
            if regions_bed:  # plain BED for tools that take the fourth column as the region class
                (stage / f"{model.name}.regions.bed").write_text("".join(
                    f"{name}\t{start}\t{end}\t{kind}\n" for name, start, end, kind, _ in regions))
            type_bases = dict.fromkeys(REGION_TYPES, 0)
            for _, start, end, kind, _ in regions:
                type_bases[kind] += end - start
            truth["species"][model.name] = {
                "gc": round(model.gc, 4),
                "motifs": [BASES[m].tobytes().decode() for m in model.motifs],
                "bases_by_type": type_bases,
            }
            if variants:
                truth["species"][model.name]["variants"] = write_variants(
                    stage / f"{model.name}{VARIANTS_SUFFIX}", genome, model.motifs, variants, seed, index,
                    model.name, fasta_name)
        (stage / "synthetic.json").write_text(json.dumps(truth, indent=1) + "\n")
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
    parser.add_argument("--variants", type=int, default=0, metavar="N",
                        help="also write <species>.variants.vcf beside each FASTA: N SNVs with ground truth, "
                             "half breaking planted motif instances (INFO MOTIF=1), half in unconstrained "
                             "background (MOTIF=0), REF as in the FASTA (data_prep/synthetic_variants.py); "
                             "0: none")
    task = parser.add_argument_group("labelled task (instead of genomes)")
    task.add_argument("--task", choices=("species", "motif"), default=None,
                      help="write a fine-tuning task to --out: which species a chunk is from, or whether a "
                           "planted motif is present (vs a shuffle of it)")
    task.add_argument("--seq-length", type=int, default=256, help="bases per task sequence")
    task.add_argument("--train-per-class", type=int, default=1000, help="training examples per class")
    task.add_argument("--eval-per-class", type=int, default=250, help="dev and test examples per class, each")
    args = parser.parse_args(argv)
    if args.task and args.variants:
        parser.error("--variants goes with genomes, not with --task")
    if args.task:
        return write_task_cli(parser, args)
    if args.species < 1 or args.records < 1 or args.length < args.records:
        parser.error("need --species >= 1, --records >= 1 and --length >= --records")
    if args.variants < 0 or args.variants == 1:
        parser.error(f"--variants {args.variants}: give 0 (none) or at least 2 (one of each class)")
    try:
        truth = generate(args.out, args.species, args.length, args.records, args.seed, not args.no_gzip,
                         not args.no_progress, args.regions_bed, args.variants)
    except ValueError as e:  # more variants than the genome has eligible bases; nothing was written
        parser.error(str(e))
    totals = dict.fromkeys(REGION_TYPES, 0)
    for info in truth["species"].values():
        for kind, count in info["bases_by_type"].items():
            totals[kind] += count
    summary = ", ".join(f"{kind} {count:,}" for kind, count in totals.items())
    print(f"{args.species} species x {args.length:,} bp -> {args.out} ({summary})")
    for name, info in truth["species"].items() if args.variants else ():
        counts = info["variants"]
        print(f"{name}: {counts['motif_breaking']:,} motif-breaking (MOTIF=1) and {counts['background']:,} "
              f"background (MOTIF=0) SNVs -> {args.out / (name + VARIANTS_SUFFIX)}")
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
