#!/usr/bin/env python
"""Embed DNA sequences with a portable MergeDNA or CARMANIA model; write a zarr store.

    python tools/embed.py --model PORTABLE_DIR --input seqs.fa --out embeddings.zarr [--per-token]
    python tools/embed.py --model PORTABLE_DIR --input dev.csv --out dev.zarr     # GUE: sequence,label
    python tools/embed.py --model PORTABLE_DIR --input chr21.fa.gz --out chr21.zarr \
        --per-base unmerge --layer 12 --window 4096 --overlap 2048 --pool mean-tokens max

Input: FASTA / FASTA.gz (ids = the first word of each header), or CSV with a `sequence` column
(GUE format; ids = 0-based row numbers, a `label` column is copied). IUPAC ambiguity codes
become N, as in data_prep. The model runs in eval mode: MergeDNA's tokenizer merges to the fixed
eval_compression (L = N / 2 by default), so embeddings are deterministic.

Which states are read (--layer, --per-base): megamerge/embedding_states.py. The store layout, and
how sequences longer than --window are cut into overlapping windows and stitched (--overlap):
megamerge/sequence_embeddings.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from megamerge import __version__
from megamerge.embedding_states import PER_BASE_SOURCES, choose_states, receptive_field
from megamerge.embedding_store import check_new_store
from megamerge.portable import load_portable, read_portable_config
from megamerge.sequence_embeddings import POOLED_ARRAYS, EmbedError, EmbedOptions, Sequence, embed

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULT_WINDOW = 4096


def read_sequences(path: Path) -> list[Sequence]:
    from data_prep.fasta import InputError, read_fasta
    from data_prep.sequence_csv import read_sequence_csv
    from megamerge.data.shards import split_softmask

    if not path.is_file():
        raise EmbedError(f"--input {path}: no such file")
    try:
        # lower case is soft-masked there; the model takes the code
        if path.suffix.lower() == ".csv":
            out = [Sequence(str(row), split_softmask(codes)[0], cells.get("label"))
                   for row, codes, cells in read_sequence_csv(path)]
        else:
            out = [Sequence(r.record_id, split_softmask(r.codes)[0]) for r in read_fasta(path)]
    except InputError as e:
        raise EmbedError(str(e)) from None
    empty = [s.seq_id for s in out if s.codes.size == 0]
    if empty:
        raise EmbedError(f"{path}: sequence {empty[0]!r} is empty")
    if not out:
        raise EmbedError(f"{path}: no sequences")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Embed DNA sequences (FASTA or GUE-style CSV) with a portable MergeDNA or CARMANIA "
        "model and write a zarr store: pooled per-sequence vectors, optionally every token's and every "
        "base's state (layout, windowing and stitching: megamerge/sequence_embeddings.py).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="portable MergeDNA or CARMANIA directory")
    parser.add_argument("--input", type=Path, required=True,
                        help="FASTA(.gz) or CSV with a 'sequence' column")
    parser.add_argument("--out", type=Path, required=True, help="zarr store to create (must not exist)")
    parser.add_argument("--per-token", action="store_true", help="also store every token's embedding")
    sources = sorted({s for family in PER_BASE_SOURCES.values() for s in family})
    parser.add_argument("--per-base", nargs="?", const="auto", choices=["auto", *sources], default=None,
                        metavar="SOURCE",
                        help="also store one vector per base. MergeDNA: 'unmerge' (each base gets its "
                        "token's state at --layer; the default) or 'local-decoder' (the Local Decoder's "
                        "per-base states, before its base head); CARMANIA: 'hidden' (its states at --layer)")
    parser.add_argument("--layer", default=None, metavar="K",
                        help="read the states after K blocks: MergeDNA 0..latent_encoder_layers, 0 (or "
                        "'local') being the Local Encoder's output; CARMANIA 0..n_layers, 0 being the "
                        "embeddings (default: the last, after the final norm)")
    parser.add_argument("--pool", nargs="+", choices=list(POOLED_ARRAYS), default=["mean-tokens"],
                        help="per-sequence vectors to store (one array each): the mean over tokens, the "
                        "mean over bases, the element-wise max")
    parser.add_argument("--window", type=int, default=None,
                        help="bases per window for long sequences (default: the model's training "
                        f"--seq-length, else {DEFAULT_WINDOW})")
    parser.add_argument("--overlap", type=int, default=None,
                        help="bases shared by consecutive windows; each window supplies only its centre "
                        "(CARMANIA: its part after `overlap` bases of left context). Default: MergeDNA 0; "
                        "CARMANIA its receptive field at --layer, at most half the window")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="compute precision")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.window is not None and args.window < 2:
        parser.error("--window must be >= 2")
    if args.overlap is not None and args.overlap < 0:
        parser.error("--overlap must be >= 0")
    return args


def choose_overlap(requested: int | None, window: int, field: int | None) -> int:
    """--overlap, or its default: 0 for MergeDNA, CARMANIA's receptive field (capped at half the window)."""
    overlap = requested if requested is not None else min(field or 0, window // 2)
    if overlap >= window:
        raise EmbedError(f"--overlap {overlap} must be smaller than --window {window}")
    if field is not None and overlap < field:
        print(f"embed.py: note: --overlap {overlap} is below CARMANIA's receptive field at this layer "
              f"({field} bases): bases just after a window start see less context than in one pass",
              file=sys.stderr)
    return overlap


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_new_store(args.out)
        config = read_portable_config(args.model)
        family, model_config = config["family"], config["model_config"]
        choice = choose_states(family, model_config, args.layer, args.per_base)
        if choice.per_base == "local-decoder" and config.get("encoder_only"):
            raise EmbedError(f"--per-base local-decoder: {args.model} was converted with --encoder-only "
                             "and has no decoders; use --per-base unmerge")
        window = args.window or int((config.get("training_args") or {}).get("seq_length") or DEFAULT_WINDOW)
        overlap = choose_overlap(args.overlap, window, receptive_field(choice, model_config))
        sequences = read_sequences(args.input)
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                              else "cpu" if args.device == "auto" else args.device)
        model = load_portable(args.model, device=device, dtype=DTYPES[args.dtype])
        options = EmbedOptions(choice, window, overlap, args.batch_size, args.per_token, tuple(args.pool))
        totals = embed(model, sequences, options, device, args.out, {
            "model": str(args.model.resolve()), "input": str(args.input.resolve()), "window": window,
            "overlap": overlap, "dtype": args.dtype, "per_token": args.per_token, "per_base": choice.per_base,
            "pool": list(args.pool), "family": family, "layer": choice.layer,
            "layer_description": choice.describe(), "megamerge_version": __version__,
            "description": f"{family} embeddings; see megamerge/sequence_embeddings.py for the layout and "
                           "the stitching of long sequences",
        }, progress=not args.no_progress)
    except (EmbedError, ValueError, FileNotFoundError) as e:
        print(f"embed.py: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {totals['sequences']} sequences ({totals['bases']} bases, {totals['tokens']} tokens, "
          f"{totals['windows']} windows) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
