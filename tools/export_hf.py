#!/usr/bin/env python
"""Export a portable megamerge model to a Hugging Face `transformers` directory, or back.

    python tools/export_hf.py --model PORTABLE_DIR --out HF_DIR
    python tools/export_hf.py --finetuned FINETUNE_OUT/seed0 --out HF_DIR   # backbone + task head
    python tools/export_hf.py --from-hf HF_DIR --out PORTABLE_DIR

HF_DIR loads with `transformers` alone (no megamerge installed), with trust_remote_code=True:
AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification (MergeDNA) and
AutoTokenizer. Its modeling file is generated from megamerge's own sources (megamerge/hf_export).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megamerge.hf_export.export import export_finetuned, export_to_hf, import_from_hf
from megamerge.hf_export.modeling_mergedna import POOLINGS_EXPORTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="portable model directory to export")
    source.add_argument("--finetuned", type=Path,
                        help="a tools/finetune.py seed directory (OUT/seed<k>): export its backbone and "
                             "head; a LoRA adapter is copied to OUT/lora_adapter for peft to load")
    source.add_argument("--from-hf", type=Path, help="exported HF directory to turn back into a portable one")
    parser.add_argument("--out", type=Path, required=True,
                        help="output directory: new or empty, outside every input; built beside it and "
                             "renamed in")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export of this tool at --out (whole, at the end); "
                             "any other non-empty --out is refused")
    parser.add_argument("--num-labels", type=int, default=2,
                        help="classes of a new sequence/token classification head (default 2)")
    parser.add_argument("--pooling", choices=POOLINGS_EXPORTED, default="mean_tokens",
                        help="pooling of AutoModelForSequenceClassification (default mean_tokens)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.model is not None:
            out = export_to_hf(args.model, args.out, num_labels=args.num_labels, pooling=args.pooling,
                               overwrite=args.overwrite)
        elif args.finetuned is not None:
            out = export_finetuned(args.finetuned, args.out, overwrite=args.overwrite)
        elif args.overwrite:
            parser_error = ("--overwrite replaces an earlier Hugging Face export; --from-hf writes a new "
                            "portable directory: give an --out that does not exist yet")
            print(f"export_hf: {parser_error}", file=sys.stderr)
            return 2
        else:
            out = import_from_hf(args.from_hf, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"export_hf: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
