#!/usr/bin/env python
"""What a MergeDNA model's learned tokenizer does to a genome: the paper's Figure 2 and more.

    python tools/analyze_tokens.py --model PORTABLE_DIR --fasta genome.fa.gz --out OUT \\
        [--bed regions.bed] [--data SHARDS_DIR] [--window 4096] [--boundary-tolerance 1]

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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Token-length statistics of a portable MergeDNA model's Local Encoder over a FASTA, per "
        "BED region class, with boundary precision/recall and per-species compression (see the module "
        "docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="portable MergeDNA directory")
    parser.add_argument("--fasta", type=Path, required=True, help="FASTA(.gz) to tokenize")
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
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.max_samples < 1:
        parser.error("--batch-size and --max-samples must be >= 1")
    if args.window < 2:
        parser.error("--window must be >= 2")
    if args.boundary_tolerance < 0:
        parser.error("--boundary-tolerance must be >= 0")
    if args.eval_compression is not None and not 0 < args.eval_compression <= 1:
        parser.error("--eval-compression must lie in (0, 1]")
    return args


def analyze(args: argparse.Namespace) -> dict:
    model, device = load_tokenizer(args.model, args.device, args.eval_compression)
    ratio = model.cfg.eval_compression
    mode = f"fixed ratio L/N = {ratio:g} per {args.window}-base window"
    records = read_fasta_codes(args.fasta)
    token_ids = tokenize_records(model, records, args.window, args.batch_size, device, not args.no_progress)
    lengths = {name: per_base_token_lengths(ids) for name, ids in token_ids.items()}
    result = {
        "model": str(args.model), "fasta": str(args.fasta), "bed": str(args.bed) if args.bed else None,
        "window": args.window, "megamerge_version": __version__,
        "inference_mode": {"mode": "fixed_ratio", "eval_compression": ratio, "description": mode + " (eval "
                           "mode: the Local Encoder merges every window to round(ratio * bases) tokens, so "
                           "the mean token length is fixed whatever the content)"},
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = analyze(args)
    except (TokenAnalysisError, ValueError, FileNotFoundError) as e:
        print(f"analyze_tokens.py: error: {e}", file=sys.stderr)
        return 2
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
