"""Why a run produced no training samples, in terms of the flags that caused it.

An empty training split is never what a user wants (train.py could only fail on it, much later),
so prepare.py refuses to publish one and says which of the reasons applies: every record too short
for a chunk, every chunk too full of N, or everything held out for validation.
"""

from __future__ import annotations

import argparse

from data_prep.accounting import SpeciesStats, totals_of


def why_no_training_samples(per_species: dict[str, SpeciesStats], notes: dict,
                            args: argparse.Namespace) -> str:
    totals = totals_of(per_species)
    if totals.input_bases == 0:
        return f"all {totals.records} records are empty"
    held_out = totals.samples["valid"]
    if held_out and args.valid_species:
        return (f"--valid-species {' '.join(args.valid_species)} holds out every species of the corpus "
                f"({', '.join(sorted(per_species))}); leave at least one for training")
    if held_out:
        return (f"--valid-frac {args.valid_frac} held out all {totals.records} records ({held_out} samples); "
                "lower it")
    longest = notes["longest_record"]
    if longest < args.min_len:
        return (f"every record is shorter than --min-len {args.min_len} (the longest has {longest:,} bases; "
                f"--seq-len {args.seq_len}): lower --seq-len or --min-len")
    dropped = totals.dropped_bases
    if dropped["n_fraction"] >= dropped["short_tail"]:
        return (f"every chunk has an N fraction above --max-n-frac {args.max_n_frac} "
                f"({dropped['n_fraction']:,} of {totals.input_bases:,} bases dropped for it)")
    return (f"every record tail is shorter than --min-len {args.min_len} and no record holds a full "
            f"--seq-len {args.seq_len} chunk (dropped bases: {dict(dropped)})")
