#!/usr/bin/env python
"""How differently two MergeDNA models tokenize the same sequence: the share of merge decisions that
changed between two checkpoints of a run (convert each to portable first, tools/convert_checkpoint.py).

    python tools/compare_tokenizers.py --model A_DIR --model B_DIR --fasta valid.fa --out OUT.json \\
        [--window 4096] [--max-bases N] [--eval-compression R]

Both Local Encoders run in eval mode (the fixed ratio L = round(eval_compression * bases) per window)
over the same windows of the FASTA (its first --max-bases bases, records in file order). OUT.json:
    positions             gaps between adjacent bases inside a window (window edges, where both
                          models always cut, are left out)
    boundary_change_rate  the share of positions where exactly one model puts a token boundary
                          (only_a + only_b over positions; 0 for identical merge decisions)
    a, b                  each model: its directory, eval_compression, boundaries at the positions,
                          and its token-length statistics, with histograms weighted per token and
                          per base (megamerge/token_analysis.py length_stats)
The definitions are in megamerge/token_analysis.py.
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
    boundary_changes,
    first_bases,
    length_stats,
    load_tokenizer,
    per_base_token_lengths,
    read_fasta_codes,
    tokenize_records,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The share of token boundaries that differ between two portable MergeDNA models on the "
        "same FASTA (e.g. two checkpoints of one run), and each model's token-length histograms (see the "
        "module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, action="append", required=True,
                        help="portable MergeDNA directory; give it twice: A, then B")
    parser.add_argument("--fasta", type=Path, required=True,
                        help="FASTA(.gz) to tokenize, e.g. a fixed held-out set")
    parser.add_argument("--out", type=Path, required=True, help="output JSON file")
    parser.add_argument("--window", type=int, default=4096, help="bases per Local Encoder window")
    parser.add_argument("--max-bases", type=int, default=None,
                        help="tokenize only the FASTA's first N bases (records in file order)")
    parser.add_argument("--eval-compression", type=float, default=None,
                        help="L/N of the fixed-ratio inference for both models (None: each model's own)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if len(args.model) != 2:
        parser.error(f"--model must be given exactly twice (A and B), got {len(args.model)}")
    if args.window < 2:
        parser.error("--window must be >= 2")
    if args.batch_size < 1 or (args.max_bases is not None and args.max_bases < 2):
        parser.error("--batch-size must be >= 1 and --max-bases >= 2")
    if args.eval_compression is not None and not 0 < args.eval_compression <= 1:
        parser.error("--eval-compression must lie in (0, 1]")
    return args


def compare(args: argparse.Namespace) -> dict:
    records = first_bases(read_fasta_codes(args.fasta), args.max_bases)
    token_ids, models = [], []
    for label, model_dir in zip("ab", args.model):
        model, device = load_tokenizer(model_dir, args.device, args.eval_compression)
        token_ids.append(tokenize_records(model, records, args.window, args.batch_size, device,
                                          not args.no_progress, desc=f"tokenizing with {label}"))
        models.append({"model": str(model_dir), "eval_compression": model.cfg.eval_compression})
        del model  # one model in memory at a time
    changes = boundary_changes(*token_ids, args.window)
    for label, ids, entry in zip("ab", token_ids, models):
        lengths = np.concatenate([per_base_token_lengths(v) for v in ids.values()])
        entry.update(boundaries=changes.pop(f"boundaries_{label}"), **length_stats(lengths))
    result = {
        "fasta": str(args.fasta), "window": args.window, "max_bases": args.max_bases,
        "megamerge_version": __version__, "bases": sum(len(c) for c in records.values()),
        "records": {name: len(codes) for name, codes in records.items()},
        **changes, "a": models[0], "b": models[1],
        "weightings": WEIGHTINGS, "histogram_bins": HIST_BINS,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = compare(args)
    except (TokenAnalysisError, ValueError, FileNotFoundError) as e:
        print(f"compare_tokenizers.py: error: {e}", file=sys.stderr)
        return 2
    print(f"{result['bases']:,} bases, {result['positions']:,} positions inside windows: boundary "
          f"change rate {result['boundary_change_rate']:.4f} ({result['only_a']:,} boundaries only in A, "
          f"{result['only_b']:,} only in B) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
