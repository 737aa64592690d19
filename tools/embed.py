#!/usr/bin/env python
"""Embed DNA sequences with a portable MergeDNA model's Latent Encoder; write a zarr store.

    python tools/embed.py --model PORTABLE_DIR --input seqs.fa --out embeddings.zarr [--per-token]
    python tools/embed.py --model PORTABLE_DIR --input dev.csv --out dev.zarr     # GUE: sequence,label

Input: FASTA / FASTA.gz (ids = the first word of each header), or CSV with a `sequence` column
(GUE format; ids = 0-based row numbers, a `label` column is copied). IUPAC ambiguity codes
become N, as in data_prep. The model runs in eval mode: the tokenizer merges to the fixed
eval_compression (L = N / 2 by default), so embeddings are deterministic.

The store layout, and how sequences longer than --window are cut into windows: see
megamerge/sequence_embeddings.py.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from megamerge import __version__
from megamerge.portable import load_portable, read_portable_config
from megamerge.sequence_embeddings import EmbedError, Sequence, embed, write_store

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULT_WINDOW = 4096


def read_sequences(path: Path) -> list[Sequence]:
    from data_prep.fasta import InputError, read_fasta
    from data_prep.normalize import InvalidBaseError, normalize
    from megamerge.data.shards import split_softmask

    if not path.is_file():
        raise EmbedError(f"--input {path}: no such file")
    if path.suffix.lower() == ".csv":
        out = []
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "sequence" not in reader.fieldnames:
                raise EmbedError(f"{path}: CSV input needs a 'sequence' column (GUE format: sequence,label)")
            for row_number, row in enumerate(reader):
                try:
                    codes, _ = normalize(row["sequence"].strip().encode("ascii", "replace"))
                    # lower case is soft-masked there; the model takes the code
                    codes = split_softmask(codes)[0]
                except InvalidBaseError as e:
                    # rows counted from 1 and the file line, as tools/finetune.py says them (ids stay 0-based)
                    raise EmbedError(f"{path}: row {row_number + 1} (line {reader.line_num}): {e}") from None
                out.append(Sequence(str(row_number), codes, row.get("label")))
    else:
        try:
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
        description="Embed DNA sequences (FASTA or GUE-style CSV) with a portable MergeDNA model's Latent "
        "Encoder and write a zarr store (layout and windowing: see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="portable MergeDNA directory")
    parser.add_argument("--input", type=Path, required=True,
                        help="FASTA(.gz) or CSV with a 'sequence' column")
    parser.add_argument("--out", type=Path, required=True, help="zarr store to create (must not exist)")
    parser.add_argument("--per-token", action="store_true", help="also store every token's embedding")
    parser.add_argument("--window", type=int, default=None,
                        help="bases per window for long sequences (default: the model's training "
                        f"--seq-length, else {DEFAULT_WINDOW})")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="compute precision")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.window is not None and args.window < 2:
        parser.error("--window must be >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = read_portable_config(args.model)
        if config["family"] != "mergedna":
            raise EmbedError(f"{args.model} holds a {config['family']} model; embeddings come from "
                             "MergeDNA's Latent Encoder")
        window = args.window or int((config.get("training_args") or {}).get("seq_length") or DEFAULT_WINDOW)
        sequences = read_sequences(args.input)
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                              else "cpu" if args.device == "auto" else args.device)
        model = load_portable(args.model, device=device, dtype=DTYPES[args.dtype])
        arrays = embed(model, sequences, window, args.batch_size, device, progress=not args.no_progress)
        write_store(arrays, args.out, args.per_token, {
            "model": str(args.model.resolve()), "input": str(args.input.resolve()), "window": window,
            "dtype": args.dtype, "per_token": args.per_token, "megamerge_version": __version__,
            "description": "MergeDNA latent-encoder embeddings; see megamerge/sequence_embeddings.py "
                           "for the layout",
        })
    except (EmbedError, ValueError, FileNotFoundError) as e:
        print(f"embed.py: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(sequences)} sequences ({int(arrays['lengths'].sum())} bases, "
          f"{int(arrays['num_tokens'].sum())} tokens) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
