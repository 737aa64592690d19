"""Does more compute move the learned tokenizer? (issue 28, item 4)

    # 1. a long run of the tiny preset on the real genomes (benchmarks/pretrain_real_genomes.py's recipe,
    #    one rank, a checkpoint every 100 iterations), e.g. two hours:
    python benchmarks/tokenizer_long_run.py --run runs/long --train-minutes 120
    # 2. the tokenizer at about 15, 30, 60 and 120 minutes, and at initialisation:
    python benchmarks/tokenizer_long_run.py --run runs/long --analyze [--minutes 15,30,60,120]

For each chosen checkpoint (the one saved closest to each minute mark, timed from the run's start) and
for the same config at initialisation (minute 0, the control every measurement needs: a random
tokenizer already separates contexts by length and composition), under RUN/analysis/<label>/:
  portable/   tools/convert_checkpoint.py
  boundaries/ tools/analyze_tokens.py on data_prep/synthetic.py's planted-region genome: boundary F1
  ablation/   benchmarks/tokenizer_ablation.py on the run's held-out species: MTR with the learned,
              random and fixed merges, and the learned scores ranked across the sequence
  contexts/   tools/analyze_tokens.py --contexts (CONTEXTS): Figure-2 JS distances and split halves
  change_from_<previous>.json  tools/compare_tokenizers.py against the previous checkpoint on the held-out
              species' genome: the share of merge decisions (token boundaries) that changed
Then RUN/analysis/long_run.json and long_run.png (the three measures against training minutes).
Every stage is skipped when its output exists, so rerunning resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.ablation import SYNTHETIC_FASTA, AblationError, run_logged, upper_case_copy
from benchmarks.pretrain_real_genomes import (
    SHARED_GENOMES,
    genome_files,
    holds_earlier_run,
    prepare_corpus,
    run_pretraining,
)

SHARED = REPO.parent / "shared" / "data"
GUE = SHARED / "benchmarks" / "GUE"
VALID_SPECIES = "Saccharomyces_cerevisiae"
SEQ_LENGTH = 512
ARABIDOPSIS = SHARED / "genomes" / "Arabidopsis_thaliana_Chr5_last1Mb_8contigs_softmasked.fa.gz"
# Figure 2's contexts that this machine's data has: GUE promoters, core promoters and TF sites, and the
# soft-masked repeats of the Arabidopsis assembly against its unmasked bases (the same windows, so the
# pair differs in content only, not in sequence length).
CONTEXTS = {
    "prom_300_tata": GUE / "prom" / "prom_300_tata" / "test.csv",
    "prom_core_all": GUE / "prom" / "prom_core_all" / "test.csv",
    "tf0": GUE / "tf" / "0" / "test.csv",
    "tf1": GUE / "tf" / "1" / "test.csv",
    "repeats_at": f"{ARABIDOPSIS}:softmasked",
    "unique_at": f"{ARABIDOPSIS}:unmasked",
}
# Pairs whose contexts share a sequence length (at the fixed eval ratio, length alone separates the
# others' distributions, already at initialisation): the same 512-base windows, and GUE's 101-base TF sites.
LENGTH_MATCHED_PAIRS = (("repeats_at", "unique_at"), ("tf0", "tf1"))
HELD_OUT_GENOME = SHARED / "genomes" / "Saccharomyces_cerevisiae_chrI.fa.gz"  # VALID_SPECIES' genome


def run(cmd: list[str], log: Path) -> None:
    """A stage's command, single-threaded and niced, its output appended to `log` (ablation.py's runner)."""
    run_logged(cmd, log, nice=5)


def train(args: argparse.Namespace) -> None:
    corpus, ckpt = args.run / "corpus", args.run / "checkpoints"
    if holds_earlier_run(ckpt):
        sys.exit(f"tokenizer_long_run.py: {ckpt} holds an earlier run; analyze it with --analyze, or pick "
                 "a new --run")
    if not (corpus / "manifest.json").exists():
        prepare_corpus(genome_files(SHARED_GENOMES), corpus, VALID_SPECIES, SEQ_LENGTH)
    run_pretraining(corpus, ckpt, SEQ_LENGTH, args.schedule_iters, 1,
                    ["--exit-duration-in-mins", str(args.train_minutes - 2), "--save-interval", "100"],
                    env={**os.environ, "OMP_NUM_THREADS": "1"})


def checkpoint_minutes(ckpt: Path) -> dict[int, float]:
    """iteration -> minutes from the run's start (run_config.json is written at start-up) to its
    checkpoint's completion."""
    start = (ckpt / "run_config.json").stat().st_mtime
    return {int(d.name.removeprefix("global_step")): (d.stat().st_mtime - start) / 60
            for d in ckpt.glob("global_step*") if d.is_dir()}


def pick(available: dict[int, float], marks: list[float]) -> dict[str, int]:
    """label -> iteration of the checkpoint closest to each minute mark."""
    return {f"{mark:g}min": min(available, key=lambda it: abs(available[it] - mark)) for mark in marks}


def initial_portable(ckpt: Path, out: Path) -> None:
    """The run's model config at initialisation (train.py's seed), as a portable directory."""
    import torch

    from megamerge.models import MergeDNA, MergeDNAConfig
    from megamerge.portable import save_portable

    config = json.loads((ckpt / "run_config.json").read_text())
    torch.manual_seed(config.get("args", {}).get("seed", 1234))
    save_portable(MergeDNA(MergeDNAConfig(**config["model_config"])), out, {"iteration": 0})


def analyze_checkpoint(label: str, iteration: int, args: argparse.Namespace) -> None:
    out = args.run / "analysis" / label
    python = sys.executable
    portable = out / "portable"
    if not (portable / "config.json").exists():
        if iteration == 0:
            initial_portable(args.run / "checkpoints", portable)
        else:
            run([python, "tools/convert_checkpoint.py", "--load", str(args.run / "checkpoints"), "--tag",
                 f"global_step{iteration}", "--out", str(portable)], out / "convert.log")
    synthetic = args.run / "analysis" / "synthetic"
    if not (out / "boundaries" / "tokens.json").exists():
        run([python, "tools/analyze_tokens.py", "--model", str(portable),
             "--fasta", str(synthetic / SYNTHETIC_FASTA), "--bed", str(synthetic / "synth_sp00.regions.bed"),
             "--window", str(SEQ_LENGTH), "--no-progress",
             "--out", str(out / "boundaries")], out / "boundaries.log")
    # The ablation resumes itself (each tokenizer's result is a file), so it always runs.
    run([python, "benchmarks/tokenizer_ablation.py", "--model", str(portable),
         "--data", str(args.run / "corpus"), "--tokenizers", "learned,random,fixed,learned_global_rank",
         "--no-progress", "--max-valid-samples", str(args.max_valid_samples), "--out", str(out / "ablation")],
        out / "ablation.log")
    if not (out / "contexts" / "tokens.json").exists():
        run([python, "tools/analyze_tokens.py", "--model", str(portable), "--window", str(SEQ_LENGTH),
             "--max-sequences-per-context", str(args.max_sequences), "--no-progress", "--out",
             str(out / "contexts"), "--contexts", *(f"{k}={v}" for k, v in CONTEXTS.items())],
            out / "contexts.log")


def decision_changes(previous: str, label: str, args: argparse.Namespace) -> None:
    analysis = args.run / "analysis"
    out = analysis / label / f"change_from_{previous}.json"
    if not out.exists():
        run([sys.executable, "tools/compare_tokenizers.py", "--model", str(analysis / previous / "portable"),
             "--model", str(analysis / label / "portable"), "--fasta", str(HELD_OUT_GENOME), "--window",
             str(SEQ_LENGTH), "--max-bases", "200000", "--no-progress", "--out", str(out)],
            analysis / label / "compare.log")


def synthetic_genome(run_dir: Path) -> None:
    synthetic = run_dir / "analysis" / "synthetic"
    if not (synthetic / "synthetic.json").exists():
        subprocess.run([sys.executable, "data_prep/synthetic.py", "--out", str(synthetic), "--species", "1",
                        "--length", "150000", "--records", "1", "--regions-bed", "--no-progress"], cwd=REPO,
                       check=True)
    if not (synthetic / SYNTHETIC_FASTA).exists():
        upper_case_copy(synthetic / "synth_sp00.fa.gz", synthetic / SYNTHETIC_FASTA)


def summary(label: str, minutes: float, iteration: int, run_dir: Path, previous: str | None) -> dict:
    out = run_dir / "analysis" / label
    bounds = json.loads((out / "boundaries" / "tokens.json").read_text())["boundaries"]
    ablation = json.loads((out / "ablation" / "ablation.json").read_text())
    contexts = json.loads((out / "contexts" / "tokens.json").read_text())
    tokenizers = ablation  # its entries "learned", "random", "fixed"
    learned_mtr, random_mtr = tokenizers["learned"]["mtr"], tokenizers["random"]["mtr"]
    ratio = contexts["js_ratio_to_split_half"]  # [a][b], symmetric
    pairs = {(a, b): ratio[a][b] for a in ratio for b in ratio[a] if a < b}
    best_pair = max(pairs, key=pairs.get)
    row = {
        "label": label, "minutes": round(minutes, 1), "iteration": iteration,
        "boundary_f1": bounds["f1"], "boundary_precision": bounds["precision"],
        "boundary_recall": bounds["recall"], "boundary_chance_precision": bounds["chance_precision"],
        "mtr_learned": learned_mtr, "mtr_random": random_mtr,
        "mtr_random_over_learned": random_mtr / learned_mtr,
        "mtr_fixed": tokenizers["fixed"]["mtr"],
        "mtr_learned_global_rank": tokenizers["learned_global_rank"]["mtr"],
        "masked_base_accuracy_learned": tokenizers["learned"]["masked_base_accuracy"],
        "masked_base_accuracy_random": tokenizers["random"]["masked_base_accuracy"],
        **{f"js_{a}_vs_{b}": contexts["js_distance"][a][b] for a, b in LENGTH_MATCHED_PAIRS},
        **{f"js_{a}_vs_{b}_over_split_half": ratio[a][b] for a, b in LENGTH_MATCHED_PAIRS},
        "js_best_pair": " vs ".join(best_pair), "js_best_pair_over_split_half": pairs[best_pair],
    }
    change = out / f"change_from_{previous}.json"
    if previous is not None:
        row["decision_change_from_previous"] = json.loads(change.read_text())["boundary_change_rate"]
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["minutes"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(minutes, [r["boundary_f1"] for r in rows], marker="o", label="boundary F1 (tolerance 1)")
    axes[0].plot(minutes, [2 * r["boundary_chance_precision"] for r in rows], ls="--",
                 label="chance F1 at L = N/2 (~2 x chance precision)")
    axes[0].set_title("planted-region genome: boundary F1")
    axes[1].plot(minutes, [100 * (r["mtr_random_over_learned"] - 1) for r in rows], marker="o")
    axes[1].axhline(10, ls="--", color="grey", label="target: +10%")
    axes[1].set_title("held-out MTR, random merges over learned (%)")
    for a, b in LENGTH_MATCHED_PAIRS:
        axes[2].plot(minutes, [r[f"js_{a}_vs_{b}_over_split_half"] for r in rows], marker="o",
                     label=f"{a} vs {b} (same length)")
    axes[2].plot(minutes, [r["js_best_pair_over_split_half"] for r in rows], marker="s",
                 label="largest pair (lengths differ)")
    axes[2].axhline(3, ls="--", color="grey", label="target: 3x")
    axes[2].set_title("Figure-2 JS distance / split-half baseline")
    for ax in axes:
        ax.set_xlabel("training minutes (0 = initialisation)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def analyze(args: argparse.Namespace) -> list[dict]:
    ckpt = args.run / "checkpoints"
    available = checkpoint_minutes(ckpt)
    if not available:
        sys.exit(f"tokenizer_long_run.py: no global_step* checkpoint under {ckpt}")
    chosen = {"0min": 0, **pick(available, args.minutes)}
    synthetic_genome(args.run)
    rows = []
    previous = None
    for label, iteration in chosen.items():
        print(f"== {label}: iteration {iteration}", flush=True)
        analyze_checkpoint(label, iteration, args)
        if previous is not None:
            decision_changes(previous, label, args)
        rows.append(summary(label, available.get(iteration, 0.0), iteration, args.run, previous))
        previous = label
    analysis = args.run / "analysis"
    (analysis / "long_run.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows, analysis / "long_run.png")
    for row in rows:
        print(json.dumps(row))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "long", help="the run's directory")
    ap.add_argument("--analyze", action="store_true",
                    help="analyze the run's checkpoints instead of training")
    ap.add_argument("--train-minutes", type=float, default=120.0,
                    help="wall-clock budget of the training run")
    ap.add_argument("--schedule-iters", type=int, default=2400, help="the lr schedule's length")
    ap.add_argument("--minutes", default="15,30,60,120",
                    help="minute marks; each picks the checkpoint saved closest to it")
    ap.add_argument("--max-valid-samples", type=int, default=300, help="held-out samples for the ablation")
    ap.add_argument("--max-sequences", type=int, default=1000, help="sequences per CSV context")
    args = ap.parse_args(argv)
    args.minutes = [float(m) for m in args.minutes.split(",")]
    args.run = args.run.resolve()
    if args.analyze:
        try:
            analyze(args)
        except AblationError as e:
            sys.exit(f"tokenizer_long_run.py: {e}")
    else:
        train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
