#!/usr/bin/env python
"""Loader rate with species weights on and off (issue 16), written to the `Species mixing (issue 16)`
section of BENCHMARKS.md.

A synthetic corpus of 4096-base samples from 8 species whose sizes halve from one to the next (the
largest holds half the samples) is written in two shard layouts (tests/mixed_corpus.py):
`prepare-like`, species one after the other into 16 open shards as data_prep's shard writer does,
and `fully mixed`, every shard holding every species. For each, the loader (crop + reverse complement,
soft-mask flags on, micro-batch 8, --num-workers workers) runs without weights, with `uniform` and
with `by_bases`, interleaved, each for --seconds after its first batch, --repeats times; the table
gives the median samples/s. Read amplification is computed from the manifest: a species' sub-stream
reads every sample of the shards that list it to keep its own, so a drawn sample costs
sum_s p_s * (samples in the shards listing s) / (samples of s) samples read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.benchmarks_md import machine_line, update_section
from megamerge.data import build_pretrain_loader
from megamerge.data.shards import split_shards
from megamerge.data.species_mixing import resolve_species_weights, train_samples_by_species
from tests.mixed_corpus import write_mixed_corpus

SECTION = "Species mixing (issue 16)"
SEQ_LEN = 4096
MODES = (None, "uniform", "by_bases")
LAYOUTS = {"prepare-like (16 open shards of 256)": {"mix": 16, "samples_per_shard": 256},
           "fully mixed (32 shards, every species in each)": {"shards": 32}}

NOTE = """Species weights cost reading, not drawing: each species' sub-stream walks the shards that list it
and keeps only its own samples (megamerge/data/species_shards.py seeks past the others' sequences, tens of
microseconds a sample against about a millisecond for a delivered one). `uniform` lifts the small species,
which sit in shards mostly filled by others, hence the larger read factor; a corpus whose shards hold few
species keeps it low. Even the slowest column is far above what a training step consumes (a 380m step on
an H200 at ~40k bases/s is ~10 samples/s; BENCHMARKS.md, GPU check)."""


def species_sizes(total: int, count: int = 8) -> dict[str, int]:
    return {f"species{i}": max(1, total >> (i + 1)) for i in range(count)}


def read_amplification(corpus: Path, mode: str | None) -> float:
    shards = split_shards(corpus, "train")
    if mode is None:
        return 1.0
    available = train_samples_by_species(shards)
    amplification = 0.0
    for species, probability in resolve_species_weights(mode, available):
        read = sum(entry.samples for entry in shards if dict(entry.samples_by_species).get(species, 0))
        amplification += probability * read / available[species]
    return amplification


def samples_per_second(corpus: Path, mode: str | None, seconds: float, num_workers: int) -> float:
    loader = build_pretrain_loader(corpus, "train", micro_batch=8, num_workers=num_workers, random_crop=True,
                                   reverse_complement=True, with_softmask=True, species_weights=mode)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    samples, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        samples += next(iterator)[0].shape[0]
    rate = samples / (time.perf_counter() - start)
    del iterator
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--samples", type=int, default=8192, help="train samples in the corpus, all species")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-workers", type=int, default=2,
                        help="loader worker processes (train.py's default)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the section instead of writing BENCHMARKS.md")
    args = parser.parse_args(argv)

    sizes = species_sizes(args.samples)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpora = {name: write_mixed_corpus(Path(tmp) / str(i), sizes, seq_len=SEQ_LEN, **layout)
                   for i, (name, layout) in enumerate(LAYOUTS.items())}
        rates = {(name, mode): [] for name in corpora for mode in MODES}
        with tqdm(total=len(rates) * args.repeats, desc="loader runs", file=sys.stderr) as bar:
            for _ in range(args.repeats):
                for name, corpus in corpora.items():
                    for mode in MODES:  # interleaved, so load changes hit every column alike
                        rates[name, mode].append(samples_per_second(corpus, mode, args.seconds,
                                                                    args.num_workers))
                        bar.update()
        for name, corpus in corpora.items():
            off = statistics.median(rates[name, None])
            cells = []
            for mode in MODES:
                median = statistics.median(rates[name, mode])
                spread = f"{min(rates[name, mode]):.0f}-{max(rates[name, mode]):.0f}"
                cells.append(f"{median:.0f} ({spread}), x{median / off:.2f}, "
                             f"reads x{read_amplification(corpus, mode):.2f}")
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    load_after = os.getloadavg()
    body = f"""Command: `python benchmarks/bench_species_mixing.py --samples {args.samples} \
--seconds {args.seconds:g} --repeats {args.repeats} --num-workers {args.num_workers}`. {machine_line()}; \
load average (1/5/15 min) \
{'/'.join(f'{x:.2f}' for x in load_before)} before, {'/'.join(f'{x:.2f}' for x in load_after)} after.

{args.samples} samples of {SEQ_LEN} bases, 8 species of {', '.join(map(str, sizes.values()))} samples; \
loader samples/s, median of {args.repeats} runs of {args.seconds:g} s (range), the ratio to weights off, \
and the samples read per sample delivered (from the manifest):

| shard layout | weights off | `uniform` | `by_bases` |
|---|---|---|---|
""" + "\n".join(rows) + "\n\n" + NOTE
    print(body)
    if not args.no_write:
        update_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
