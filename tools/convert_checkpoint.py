#!/usr/bin/env python
"""Convert megamerge DeepSpeed checkpoints to and from the portable format (safetensors + JSON).
Both model families convert (MergeDNA, CARMANIA): the family is read from the checkpoint and
written to config.json, so `megamerge.from_pretrained` rebuilds the right class.

To portable (any ZeRO stage <= 2, any TP, PP and DP; weights from the fp32 master copies):

    python tools/convert_checkpoint.py --load CKPT_DIR [--tag global_stepN] --out PORTABLE_DIR \\
        [--dtype fp32|bf16] [--encoder-only]

Back to training, at any TP x PP layout (weights only, fresh optimizer):

    python tools/convert_checkpoint.py --from-portable PORTABLE_DIR --out CKPT_DIR --tp T --pp P
    deepspeed megamerge/train.py --load CKPT_DIR --finetune --tensor-model-parallel-size T \\
        --pipeline-model-parallel-size P ...

The output directory appears only when the conversion succeeded; a failure prints one line and
exits 2. DeepSpeed's own pickles are read with torch.load(weights_only=True) and an explicit
allow-list (megamerge/checkpoint_conversion/safe_load.py); the portable output holds no pickles.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from megamerge.checkpoint_conversion import ConversionError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert a megamerge DeepSpeed checkpoint to the portable format (--load), or a portable "
        "model back to a DeepSpeed checkpoint at a chosen TP x PP layout (--from-portable).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--load", type=Path, metavar="CKPT_DIR",
                        help="DeepSpeed checkpoint directory (train.py --save), converted to portable")
    source.add_argument("--from-portable", type=Path, metavar="PORTABLE_DIR",
                        help="portable model directory, converted to a DeepSpeed checkpoint")
    parser.add_argument("--out", type=Path, required=True,
                        help="output directory (must not exist or be empty)")
    g = parser.add_argument_group("to portable (--load)")
    g.add_argument("--tag", default=None,
                   help="checkpoint tag, e.g. global_step1000 (default: the 'latest' file)")
    g.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="stored weight precision")
    g.add_argument("--encoder-only", action="store_true",
                   help="keep only the Local and Latent Encoders (MergeDNA; embeddings, "
                        "downstream fine-tuning)")
    g = parser.add_argument_group("back to DeepSpeed (--from-portable)")
    g.add_argument("--tp", type=int, default=1, help="tensor-parallel size of the written checkpoint")
    g.add_argument("--pp", type=int, default=1,
                   help="pipeline-parallel size of the written checkpoint (MergeDNA)")
    g.add_argument("--zero-stage", type=int, default=None, choices=[1, 2],
                   help="ZeRO stage of the engine that writes it (default: 2, or 1 with --pp > 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    if args.from_portable is not None and (args.tag or args.encoder_only or args.dtype != "fp32"):
        parser.error("--tag, --dtype and --encoder-only apply to --load only")
    if args.load is not None and (args.tp != 1 or args.pp != 1 or args.zero_stage is not None):
        parser.error("--tp, --pp and --zero-stage apply to --from-portable only (--load reads the layout "
                     "from the checkpoint)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # DeepSpeed logs every engine step at INFO; a conversion only needs its own lines.
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    try:
        if args.load is not None:
            from megamerge.checkpoint_conversion.to_portable import convert_to_portable

            out = convert_to_portable(args.load, args.out, args.tag, DTYPES[args.dtype], args.encoder_only,
                                      progress=not args.quiet)
        else:
            from megamerge.checkpoint_conversion.from_portable import convert_from_portable

            out = convert_from_portable(args.from_portable, args.out, args.tp, args.pp, args.zero_stage)
    except ConversionError as e:
        print(f"convert_checkpoint.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convert_checkpoint.py: interrupted; nothing was written", file=sys.stderr)
        return 130
    if not args.quiet:
        what = "portable model" if args.load is not None else (
            f"DeepSpeed checkpoint (TP={args.tp}, PP={args.pp}; load with train.py --load {out} --finetune)")
        print(f"wrote {what} to {out} in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
