#!/usr/bin/env python
"""Sample DNA from a CARMANIA model saved in the portable format (megamerge.portable).

    python tools/generate.py --model PORTABLE_DIR --prompt ACGTTGCA --max-new 1000 \
        [--num-samples 4] [--top-k 3] [--temperature 0.8] [--seed 0] [--out samples.fa]

Writes FASTA (to stdout, or --out): one record per sample, the prompt followed by the sampled
bases. Each new base costs one cached step whose attention reads at most `window` keys per
layer, so time and memory per base do not grow with the length generated.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megamerge.models.carmania.generation import generate
from megamerge.portable import load_portable, read_portable_config
from megamerge.vocabulary import decode, encode_tensor

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LINE_WIDTH = 80


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Sample DNA sequences from a portable CARMANIA model with a sliding-window KV cache.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True,
                        help="portable model directory (model.safetensors + config.json)")
    parser.add_argument("--prompt", required=True, help="prompt bases, A/C/G/T/N in any case")
    parser.add_argument("--max-new", type=int, default=1000, help="bases to sample after the prompt")
    parser.add_argument("--num-samples", type=int, default=1, help="sequences sampled in one batch")
    parser.add_argument("--top-k", type=int, default=0,
                        help="sample among the k most likely bases (0: all 4)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (0: greedy)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (cuda if available)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="compute precision")
    parser.add_argument("--out", type=Path, help="write FASTA here instead of stdout")
    parser.add_argument("--name", default="sample", help="FASTA record name prefix")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)
    if args.max_new < 0 or args.num_samples < 1:
        parser.error("need --max-new >= 0 and --num-samples >= 1")
    if not 0 <= args.top_k <= 4:
        parser.error("--top-k must lie in [0, 4]: there are four bases")
    if args.temperature < 0:
        parser.error("--temperature must be >= 0")
    if not args.prompt:
        parser.error("--prompt must contain at least one base")
    return args


def fasta_record(name: str, seq: str) -> str:
    lines = [seq[i:i + LINE_WIDTH] for i in range(0, len(seq), LINE_WIDTH)]
    return f">{name}\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        prompt = encode_tensor(args.prompt)
        config = read_portable_config(args.model)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if config["family"] != "carmania":
        print(f"error: {args.model} holds a {config['family']} model; only CARMANIA (a causal LM) "
              "can generate", file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    model = load_portable(args.model, device=device, dtype=DTYPES[args.dtype])

    generator = torch.Generator().manual_seed(args.seed)
    prompts = prompt[None].expand(args.num_samples, -1)
    start = time.perf_counter()
    with tqdm(total=args.max_new, desc="bases", unit="bp", file=sys.stderr,
              disable=args.no_progress, leave=False) as bar:
        ids = generate(model, prompts, args.max_new, args.temperature, args.top_k or None, generator,
                       on_step=lambda _: bar.update(1))
    seconds = time.perf_counter() - start

    records = []
    for i, row in enumerate(ids):
        header = (f"{args.name}_{i} prompt_len={prompt.numel()} new={args.max_new} seed={args.seed} "
                  f"top_k={args.top_k} temperature={args.temperature}")
        records.append(fasta_record(header, decode(row)))
    text = "".join(records)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    total = args.max_new * args.num_samples
    print(f"generated {args.num_samples} x {args.max_new} bases on {device} in {seconds:.2f} s "
          f"({total / max(seconds, 1e-9):.0f} bases/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
