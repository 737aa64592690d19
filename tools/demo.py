"""`make demo`: the product's main job on its embedded default, on CPU, in a few minutes.

1. generate synthetic multi-species genomes (data_prep/synthetic.py; no outside data);
2. prepare WebDataset shards, one species held out for validation (data_prep/prepare.py);
3. pre-train the tiny MergeDNA with `deepspeed --num_gpus 2 megamerge/train.py
   --ds_config ds_configs/cpu.json` (two CPU ranks, ZeRO-2, gloo), with evaluation and checkpoints;
4. print the first and last losses, the validation masked-base accuracy and where things are.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from megamerge.training.input_checks import move_aside


def run(cmd: list[str], step: str) -> None:
    print(f"\n=== {step}\n$ {' '.join(cmd)}", flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, check=False)
    if proc.returncode != 0:
        sys.exit(f"demo: step '{step}' failed with exit code {proc.returncode}")
    print(f"--- {step}: {time.time() - t0:.0f}s", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo",
                    help="working directory for genomes, shards, checkpoints, logs")
    ap.add_argument("--species", type=int, default=4, help="synthetic species (the last one is held out)")
    ap.add_argument("--length", type=int, default=400_000, help="bases per species")
    ap.add_argument("--seq-length", type=int, default=512, help="bases per training sequence")
    ap.add_argument("--train-iters", type=int, default=300)
    ap.add_argument("--nproc", type=int, default=2, help="DeepSpeed ranks (CPU processes)")
    ap.add_argument("--fresh", action="store_true",
                    help="delete --out first (default: keep its data, and rename an earlier run's "
                         "checkpoints and tensorboard to <name>.before-<UTC time>)")
    args = ap.parse_args(argv)

    out = (REPO / args.out).resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    genomes, corpus, ckpt, tb = out / "genomes", out / "corpus", out / "checkpoints", out / "tensorboard"
    py = sys.executable
    if not (genomes / "synthetic.json").exists():
        run([py, "data_prep/synthetic.py", "--out", str(genomes), "--species", str(args.species),
             "--length", str(args.length), "--seed", "0"], "1/3 synthetic genomes")
    if not (corpus / "manifest.json").exists() or \
            json.loads((corpus / "manifest.json").read_text())["parameters"]["seq_len"] != args.seq_length:
        held_out = f"synth_sp{args.species - 1:02d}"
        run([py, "data_prep/prepare.py", "--input", str(genomes), "--out", str(corpus), "--seq-len",
             str(args.seq_length), "--valid-species", held_out, "--samples-per-shard", "256", "--overwrite"],
            "2/3 WebDataset shards")
    for earlier in (d for d in (ckpt, tb) if d.exists()):  # a new run; the earlier one stays, renamed
        print(f"\n(the earlier run's {earlier.name} is kept as {move_aside(earlier)})", flush=True)
    deepspeed = str(Path(py).parent / "deepspeed")
    run([deepspeed, "--num_gpus", str(args.nproc), "megamerge/train.py",
         "--ds_config", "ds_configs/cpu.json", "--model", "tiny", "--data", str(corpus),
         "--seq-length", str(args.seq_length), "--micro-batch-size", "4",
         "--global-batch-size", str(4 * args.nproc),
         "--train-iters", str(args.train_iters), "--lr", "2e-3", "--min-lr", "2e-4",
         "--lr-warmup-iters", str(max(1, args.train_iters // 10)), "--weight-decay", "0.01",
         "--eval-interval", str(max(1, args.train_iters // 3)), "--eval-iters", "8", "--log-interval", "10",
         "--save", str(ckpt), "--save-interval", str(max(1, args.train_iters // 2)),
         "--tensorboard-dir", str(tb),
         "--num-workers", "1"], "3/3 pre-training (DeepSpeed ZeRO-2, CPU)")

    records = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split", "train") == "train"]
    valid = [r for r in records if r.get("split") == "valid"]
    first, last = train[0], train[-1]
    print("\n=== MergeDNA demo summary")
    print(f"loss        iteration {first['iteration']:>4}: {first['loss']:.4f}  (MTR {first['mtr']:.3f}, "
          f"AMTM {first['amtm']:.3f})")
    print(f"loss        iteration {last['iteration']:>4}: {last['loss']:.4f}  (MTR {last['mtr']:.3f}, "
          f"AMTM {last['amtm']:.3f})")
    if valid:
        v = valid[-1]
        print(f"validation  held-out species, iteration {v['iteration']}: masked-base accuracy "
              f"{v['masked_base_accuracy']:.3f}, perplexity {v['perplexity']:.3f}")
    print(f"tokenizer   {last['bases_per_token']:.2f} bases per token")
    print(f"checkpoint  {ckpt}/{(ckpt / 'latest').read_text().strip()}")
    print(f"metrics     {ckpt / 'metrics.jsonl'}")
    print(f"tensorboard tensorboard --logdir {tb}")
    if not last["loss"] < first["loss"]:
        print("demo: the loss did not fall", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
