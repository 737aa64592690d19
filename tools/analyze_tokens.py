#!/usr/bin/env python
"""What a MergeDNA model's learned tokenizer does to a genome: the paper's Figure 2 and more.

    python tools/analyze_tokens.py --model PORTABLE_DIR --fasta genome.fa.gz --out OUT \\
        [--bed regions.bed] [--data SHARDS_DIR] [--window 4096] [--boundary-tolerance 1]
    python tools/analyze_tokens.py --model PORTABLE_DIR --out OUT --contexts \\
        prom=GUE/prom/prom_300_tata/test.csv repeats=genome.fa.gz:softmasked unique=genome.fa.gz:unmasked

Runs the Local Encoder (eval mode: the fixed ratio L = round(eval_compression * bases) per window)
over the FASTA in windows and writes
    OUT/tokens.json                  token-length statistics for all bases, and with --bed per region
                                     class (fourth BED column): token count, mean / median / max token
                                     length, histograms of lengths 1..16+ weighted per token and per
                                     base; token-boundary precision / recall / F1 against the BED's
                                     boundaries; with --data, compression per species
    OUT/token_lengths.png            the histograms, both weightings side by side
    OUT/per_base_token_lengths.npz   per record: the length of the token each base sits in (uint16)
The definitions (weightings, straddling tokens, forced window boundaries) are in
megamerge/token_analysis.py. Synthetic genomes with a ground-truth BED:
data_prep/synthetic.py --regions-bed.

With --contexts NAME=SPEC ... instead of --fasta (the paper's Figure 2 on real sequence), it writes
    OUT/tokens.json                  per context (`contexts`): the sequences / bases used and skipped,
                                     and the token-length statistics; `js_distance` between every
                                     two contexts' per-base histograms, `split_half_js` per context
                                     (two random halves of one context: the distance chance alone
                                     gives) and `js_ratio_to_split_half` per pair
    OUT/token_lengths_by_context.png normalised frequency of token lengths 1..16 per base, one curve
                                     per context
SPEC syntax, soft-mask attribution and limits: megamerge/token_contexts.py; the distances:
megamerge/token_distance.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from megamerge import __version__
from megamerge.token_analysis import (
    HIST_BINS,
    WEIGHTINGS,
    TokenAnalysisError,
    boundary_scores,
    check_regions,
    length_stats,
    load_tokenizer,
    per_base_token_lengths,
    plot_histograms,
    read_bed,
    read_fasta_codes,
    region_stats,
    species_compression,
    tokenize_records,
)
from megamerge.token_contexts import SPEC_SYNTAX, context_token_lengths, parse_contexts
from megamerge.token_distance import histogram, pairwise_js, split_half_js


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Token-length statistics of a portable MergeDNA model's Local Encoder over a FASTA, per "
        "BED region class, with boundary precision/recall and per-species compression; or, with --contexts, "
        "per named context (GUE CSVs, soft-masked or unmasked bases of FASTAs) with the Jensen-Shannon "
        "distance between every two contexts against a split-half baseline (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="portable MergeDNA directory")
    parser.add_argument("--fasta", type=Path, default=None, help="FASTA(.gz) to tokenize (or --contexts)")
    parser.add_argument("--contexts", nargs="+", default=None, metavar="NAME=SPEC",
                        help=f"named contexts to compare instead of --fasta: {SPEC_SYNTAX}. A CSV needs a "
                        "'sequence' column (GUE's train/dev/test.csv) and each sequence is tokenized whole; "
                        "a FASTA is tokenized in --window windows, and :softmasked / :unmasked then keep "
                        "only its lower-case / upper-case bases (the model still sees every base). A "
                        "colon inside FILE's own name is fine when FILE exists. N bases are left out and "
                        "counted; a bad CSV row (a character outside ACGTN and IUPAC codes, an empty "
                        "sequence) is an error naming the file and the row")
    parser.add_argument("--bed", type=Path, default=None,
                        help="BED of annotated regions (4th column = class)")
    parser.add_argument("--data", type=Path, default=None,
                        help="prepared shards directory (data_prep/prepare.py): compression per species")
    parser.add_argument("--data-split", default="valid", help="which split of --data to read")
    parser.add_argument("--max-samples", type=int, default=2000, help="samples of --data to tokenize at most")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created)")
    parser.add_argument("--window", type=int, default=4096, help="bases per Local Encoder window")
    parser.add_argument("--boundary-tolerance", type=int, default=1,
                        help="a token boundary within this many bases of an annotation boundary matches it")
    parser.add_argument("--eval-compression", type=float, default=None,
                        help="L/N of the fixed-ratio inference (default: the model's eval_compression)")
    parser.add_argument("--merge-selection", choices=("per_window", "global_rank"), default=None,
                        help="which merges the learned scores take: per_window (the paper's budget of r_l "
                             "pairs in every window) or global_rank (one ranking across the window, so "
                             "content decides where tokens grow); default: the model's own")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = parser.add_argument_group("--contexts options")
    group.add_argument("--max-sequences-per-context", type=int, default=2000,
                       help="CSV rows per context at most, drawn at random (--seed); the rest are counted "
                       "as skipped")
    group.add_argument("--max-bases-per-context", type=int, default=500_000,
                       help="FASTA bases per context at most: windows are taken in a random order (--seed) "
                       "until the context holds this many bases; the rest are counted as skipped")
    group.add_argument("--split-half-splits", type=int, default=5,
                       help="random splits of each context into two halves for the split-half baseline")
    group.add_argument("--split-block", type=int, default=1000,
                       help="a FASTA context is split into halves in blocks of this many consecutive "
                       "bases, so that neighbouring bases do not land in both halves (a CSV context: "
                       "whole sequences)")
    group.add_argument("--seed", type=int, default=0, help="seed of the sampling and of the splits")
    args = parser.parse_args(argv)
    if (args.fasta is None) == (args.contexts is None):
        parser.error("give --fasta (with --bed / --data) or --contexts, one of the two")
    if args.contexts is not None and (args.bed or args.data):
        parser.error("--bed and --data go with --fasta, not --contexts")
    if args.batch_size < 1 or args.max_samples < 1:
        parser.error("--batch-size and --max-samples must be >= 1")
    if min(args.max_sequences_per_context, args.max_bases_per_context, args.split_half_splits,
           args.split_block) < 1:
        parser.error("--max-sequences-per-context, --max-bases-per-context, --split-half-splits and "
                     "--split-block must be >= 1")
    if args.window < 2:
        parser.error("--window must be >= 2")
    if args.boundary_tolerance < 0:
        parser.error("--boundary-tolerance must be >= 0")
    if args.eval_compression is not None and not 0 < args.eval_compression <= 1:
        parser.error("--eval-compression must lie in (0, 1]")
    return args


def inference_mode(model, window: int) -> tuple[str, dict]:
    """-> (short words for plot titles, the tokens.json entry)."""
    ratio = model.cfg.eval_compression
    mode = f"fixed ratio L/N = {ratio:g} per {window}-base window, {model.cfg.merge_selection} merges"
    return mode, {"mode": "fixed_ratio", "eval_compression": ratio,
                  "merge_selection": model.cfg.merge_selection, "description": mode + " (eval mode: "
                  "the Local Encoder merges every window to round(ratio * bases) tokens, so the mean token "
                  "length is fixed whatever the content)"}


def analyze(args: argparse.Namespace) -> dict:
    if args.contexts is not None:
        return analyze_contexts(args)
    model, device = load_tokenizer(args.model, args.device, args.eval_compression, args.merge_selection)
    mode, mode_entry = inference_mode(model, args.window)
    records = read_fasta_codes(args.fasta)
    token_ids = tokenize_records(model, records, args.window, args.batch_size, device, not args.no_progress)
    lengths = {name: per_base_token_lengths(ids) for name, ids in token_ids.items()}
    result = {
        "model": str(args.model), "fasta": str(args.fasta), "bed": str(args.bed) if args.bed else None,
        "window": args.window, "megamerge_version": __version__, "inference_mode": mode_entry,
        "weightings": WEIGHTINGS, "histogram_bins": HIST_BINS,
        "records": {name: {"bases": int(ids.size), "tokens": int(np.unique(ids).size)}
                    for name, ids in token_ids.items()},
        "all": length_stats(np.concatenate(list(lengths.values()))),
    }
    stats_to_plot = {"all": result["all"]}
    if args.bed:
        regions = read_bed(args.bed)
        missing = check_regions(regions, {name: len(c) for name, c in records.items()}, args.bed)
        regions = [r for r in regions if r.record in records]
        if not regions:
            raise TokenAnalysisError(f"--bed {args.bed}: none of its records is in --fasta {args.fasta}")
        result["bed_records_not_in_fasta"] = missing
        result["regions"] = region_stats(regions, lengths)
        result["boundaries"] = boundary_scores(token_ids, regions, args.boundary_tolerance)
        stats_to_plot.update(result["regions"])
    if args.data:
        result["data"] = {"dir": str(args.data), "split": args.data_split, "max_samples": args.max_samples}
        result["species"] = species_compression(model, args.data, args.data_split, args.max_samples,
                                                args.batch_size, device, not args.no_progress)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "per_base_token_lengths.npz",
                        **{name: v.astype(np.uint16) for name, v in lengths.items()})
    (args.out / "tokens.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_histograms(stats_to_plot, args.out / "token_lengths.png", mode)
    return result


def analyze_contexts(args: argparse.Namespace) -> dict:
    specs = parse_contexts(args.contexts)  # bad specs fail before the model loads
    model, device = load_tokenizer(args.model, args.device, args.eval_compression, args.merge_selection)
    mode, mode_entry = inference_mode(model, args.window)
    contexts, warnings = context_token_lengths(
        model, specs, window=args.window, block=args.split_block,
        max_sequences=args.max_sequences_per_context, max_bases=args.max_bases_per_context, seed=args.seed,
        batch_size=args.batch_size, device=device, progress=not args.no_progress)
    stats, split_half = {}, {}
    for c in contexts:
        stats[c.spec.name] = {"path": str(c.spec.path), "selection": c.spec.selection, "unit": c.unit,
                              "units": len(c.units), "counts": c.counts,
                              **length_stats(np.concatenate(c.units))}
        split_half[c.spec.name] = split_half_js(c.units, args.split_half_splits, args.seed)
    distance, ratio = pairwise_js({c.spec.name: histogram(c.units) for c in contexts}, split_half)
    result = {
        "model": str(args.model), "window": args.window, "megamerge_version": __version__,
        "inference_mode": mode_entry, "weightings": WEIGHTINGS, "histogram_bins": HIST_BINS,
        "limits": {"max_sequences_per_context": args.max_sequences_per_context,
                   "max_bases_per_context": args.max_bases_per_context, "seed": args.seed},
        "distance": "Jensen-Shannon distance (sqrt of the JS divergence, base 2: 0 identical, 1 disjoint) "
                    "between per-base token-length histograms (lengths 1..15, 16+)",
        "split_half": {"splits": args.split_half_splits, "seed": args.seed,
                       "fasta_block_bases": args.split_block,
                       "description": "JS distance between two random halves of one context's units"},
        "warnings": warnings,
        "contexts": stats,
        "js_distance": distance,
        "split_half_js": split_half,
        "js_ratio_to_split_half": ratio,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tokens.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_histograms(stats, args.out / "token_lengths_by_context.png", mode, weightings=("per_base",))
    return result


def context_summary(result: dict) -> str:
    parts = [f"{name} {s['bases']:,} bases, mean {s['mean_token_length_per_base']:.2f} per base, "
             f"split-half {result['split_half_js'][name]['mean']}" for name, s in result["contexts"].items()]
    pairs = [(d, a, b) for a, row in result["js_distance"].items() for b, d in row.items() if a < b]
    if pairs:
        d, a, b = max(pairs)
        parts.append(f"largest JS distance {d:.4f} ({a} vs {b}, "
                     f"{result['js_ratio_to_split_half'][a][b]}x split-half)")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = analyze(args)
    except (TokenAnalysisError, ValueError, FileNotFoundError) as e:
        print(f"analyze_tokens.py: error: {e}", file=sys.stderr)
        return 2
    if "contexts" in result:
        print(f"{context_summary(result)} -> {args.out}", file=sys.stderr)
        return 0
    summary = f"{result['all']['bases']:,} bases, {result['all']['tokens']:,.0f} tokens"
    if "regions" in result:
        means = ", ".join(f"{cls} {s['mean_token_length_per_base']:.2f}"
                          for cls, s in result["regions"].items())
        summary += f"; per-base mean token length: {means}; boundary F1 {result['boundaries']['f1']:.3f}"
    print(f"{summary} ({result['inference_mode']['mode']} {result['inference_mode']['eval_compression']:g}) "
          f"-> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
