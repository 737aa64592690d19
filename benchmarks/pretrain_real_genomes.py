"""Pre-train the tiny MergeDNA on the real multi-species genomes in ../shared/data/genomes with
one species held out, then compare it with an order-k Markov baseline fitted on the same
training split (k chosen on validation). Results go to the `Real genomes` section of
BENCHMARKS.md.

    python benchmarks/pretrain_real_genomes.py [--valid-species Saccharomyces_cerevisiae] [--budget-mins 20]

The budget is enforced, not hoped for: train.py gets `--exit-duration-in-mins` (the budget less a
margin for the final validation pass and checkpoint), so on a slower or busier machine the run
does fewer iterations instead of running over. `--budget-mins 0` drops the time budget: the run does
all `--train-iters`, an iteration budget that compares runs fairly on a machine whose load varies
(benchmarks/ablation.py runs this recipe that way, per variant); `--extra-train-args` adds train.py flags.

Files are labelled Genus_species (so the two yeast files form one held-out species, and the three
E. coli genomes one training species).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.benchmarks_md import machine_line, update_section
from benchmarks.markov_baseline import markov_baseline

SHARED_GENOMES = REPO.parent / "shared" / "data" / "genomes"
GLOBAL_BATCH = 8  # sequences per optimizer step, whatever the number of ranks
SCHEDULE_ITERS = 900  # the lr schedule of the 20-minute recipe (2 CPU ranks stopped at 656 in 20 minutes)
FINAL_MARGIN_MINS = 1.5  # of the time budget, kept for the final validation pass and checkpoint


def species_label(path: Path) -> str:
    stem = re.sub(r"\.(fa|fna|fasta)(\.gz)?$", "", path.name)
    words = stem.split("_")
    if len(words) >= 2 and words[0][:1].isupper() and words[1][:1].islower():
        return f"{words[0]}_{words[1]}"
    return words[0]


def genome_files(genomes: Path) -> list[Path]:
    return sorted(p for p in genomes.iterdir() if p.name.endswith((".gz", ".fa", ".fna", ".fasta")))


def prepare_corpus(files: list[Path], corpus: Path, valid_species: str | None, seq_length: int,
                   valid_frac: float = 0.0) -> None:
    """Shards of `seq_length` bases from `files`, labelled Genus_species, `valid_species` held out (or, with
    None, the records whose id hashes below `valid_frac`: data_prep/split.py)."""
    corpus.parent.mkdir(parents=True, exist_ok=True)
    species_map = corpus.parent / "species.tsv"
    species_map.write_text("".join(f"{p.name}\t{species_label(p)}\n" for p in files))
    held_out = ["--valid-species", valid_species] if valid_species else ["--valid-frac", str(valid_frac)]
    subprocess.run([sys.executable, "data_prep/prepare.py", "--input", *map(str, files), "--out", str(corpus),
                    "--overwrite", "--seq-len", str(seq_length), "--species-map", str(species_map),
                    *held_out, "--samples-per-shard", "1024"], cwd=REPO, check=True)


def pretrain_args(corpus: Path, ckpt: Path, seq_length: int, train_iters: int,
                  log_interval: int = 50, model: str = "tiny") -> list[str]:
    """train.py and its flags for this benchmark's recipe: the `model` preset (tiny), global batch 8
    (micro-batch 4), lr 2e-3 cosine to 2e-4 after a 10% warm-up, validation on the whole held-out split
    at the end."""
    return ["megamerge/train.py", "--ds_config", "ds_configs/cpu.json", "--model", model,
            "--data", str(corpus), "--seq-length", str(seq_length), "--micro-batch-size", "4",
            "--global-batch-size", str(GLOBAL_BATCH),
            "--train-iters", str(train_iters), "--lr", "2e-3", "--min-lr", "2e-4",
            "--lr-warmup-iters", str(train_iters // 10), "--weight-decay", "0.01",
            "--eval-interval", str(train_iters), "--eval-iters", "100000",
            "--log-interval", str(log_interval),
            "--save", str(ckpt), "--save-interval", str(train_iters), "--num-workers", "1"]


def holds_earlier_run(ckpt: Path) -> bool:
    """Whether a checkpoint directory already holds something: the benchmarks that pre-train then
    stop, naming a way out, rather than delete a run the user has."""
    return ckpt.is_dir() and any(ckpt.iterdir())


def run_pretraining(corpus: Path, ckpt: Path, seq_length: int, train_iters: int, nproc: int,
                    extra: list[str], env: dict | None = None) -> None:
    """train.py with this recipe (pretrain_args) and `extra` flags under the DeepSpeed launcher; the
    caller has checked that `ckpt` holds no earlier run (holds_earlier_run)."""
    subprocess.run([str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(nproc),
                    *pretrain_args(corpus, ckpt, seq_length, train_iters), *extra],
                   cwd=REPO, env=env, check=True)


def time_budget_flags(budget_mins: float, final_margin_mins: float = FINAL_MARGIN_MINS) -> list[str]:
    """train.py's flags that end the training command within `budget_mins` from start-up to the final
    checkpoint (none for a budget of 0: the run does all its iterations)."""
    return ["--exit-duration-in-mins", str(budget_mins - final_margin_mins)] if budget_mins > 0 else []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--genomes", type=Path, default=SHARED_GENOMES)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "real")
    ap.add_argument("--valid-species", default="Saccharomyces_cerevisiae")
    ap.add_argument("--seq-length", type=int, default=512)
    ap.add_argument("--train-iters", type=int, default=SCHEDULE_ITERS,
                    help="the lr schedule's length; the time budget may stop the run earlier")
    ap.add_argument("--budget-mins", type=float, default=20.0,
                    help="wall-clock budget of the training command, start-up to final checkpoint; 0: none, "
                         "the run does all --train-iters (an iteration budget)")
    ap.add_argument("--final-margin-mins", type=float, default=FINAL_MARGIN_MINS,
                    help="part of the budget kept for the final validation pass and checkpoint")
    ap.add_argument("--nproc", type=int, default=2, help="ranks; the global batch stays 8 sequences")
    ap.add_argument("--extra-train-args", default="",
                    help="more train.py flags, one shell-quoted string, e.g. '--rotary-merge'")
    ap.add_argument("--max-order", type=int, default=10)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if not args.genomes.is_dir():
        sys.exit(f"{args.genomes}: not found (the shared genomes are needed for this benchmark)")

    out = args.out.resolve()
    corpus, ckpt = out / "corpus", out / "checkpoints"
    if holds_earlier_run(ckpt):
        sys.exit(f"pretrain_real_genomes.py: {ckpt} holds an earlier run; give a new --out "
                 "(nothing was deleted)")
    out.mkdir(parents=True, exist_ok=True)
    files = genome_files(args.genomes)
    print("== preparing shards", flush=True)
    prepare_corpus(files, corpus, args.valid_species, args.seq_length)
    manifest = json.loads((corpus / "manifest.json").read_text())

    print("== pre-training", flush=True)
    t0 = time.time()
    run_pretraining(corpus, ckpt, args.seq_length, args.train_iters, args.nproc,
                    time_budget_flags(args.budget_mins, args.final_margin_mins)
                    + shlex.split(args.extra_train_args))
    minutes = (time.time() - t0) / 60
    status = json.loads((ckpt / "exit_status.json").read_text())
    iters_done = status["iteration"]
    records = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r.get("split") == "valid"][-1]
    train = [r for r in records if r.get("split", "train") == "train"]

    print("== Markov baseline", flush=True)
    markov = markov_baseline(str(corpus), args.max_order)
    beaten = valid["perplexity"] < markov["perplexity"]
    totals = manifest["totals"]
    body = "\n".join([
        "Command: `python benchmarks/pretrain_real_genomes.py`",
        f"Machine: {machine_line()}; {args.nproc} CPU ranks (DeepSpeed ZeRO-2, fp32).",
        "",
        (f"Data: the {len(files)} genomes of `../shared/data/genomes` ({totals['input_bases']:,} bases; "
        f"{totals['kept_bases']:,} kept), sequences of {args.seq_length}; held-out species "
        f"**{args.valid_species}** (validation), all others train. Species are labelled Genus_species."),
        (f"Model: `tiny` (2.0M parameters), {iters_done} iterations (of a {args.train_iters}-iteration lr "
        f"schedule; stop: {status['reason']}) x {GLOBAL_BATCH} sequences "
        f"({iters_done * GLOBAL_BATCH * args.seq_length / 1e6:.1f}M bases seen), "
        f"{minutes:.1f} minutes wall-clock for the training command (budget {args.budget_mins:g})."),
        "",
        "| model | validation metric | perplexity (per base) | accuracy |",
        "|---|---|---|---|",
        (f"| MergeDNA tiny | masked bases (AMTM masking, ~50% of tokens) | {valid['perplexity']:.3f} | "
        f"{valid['masked_base_accuracy']:.3f} |"),
        (f"| order-{markov['order']} Markov (add-{markov['alpha']}) | every base, true preceding context | "
        f"{markov['perplexity']:.3f} | {markov['accuracy']:.3f} |"),
        "",
        (f"Training loss: {train[0]['loss']:.3f} (first log) -> {train[-1]['loss']:.3f}; MTR "
        f"{train[0]['mtr']:.3f} -> {train[-1]['mtr']:.3f}; "
        f"{train[-1]['bases_per_token']:.2f} bases per token."),
        (f"Markov k was chosen on validation among 0..{args.max_order} (and smoothing among 0.01, 0.1, 1); "
        f"it was fitted on {markov['train_bases']:,} training positions and scored on "
        f"{markov['valid_bases']:,} validation positions."),
        "",
        ("**The baseline is beaten.**" if beaten else
         "**The baseline is not beaten** at this scale: the tiny model saw a fraction of one epoch, and it "
         "predicts masked bases with whole tokens (about half of them) hidden, while the Markov model "
         "reads the true preceding bases."),
    ])
    print(body)
    if not args.no_write:
        update_section("Real genomes (issue 4)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
