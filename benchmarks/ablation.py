"""The ablation of issue 15: the paper's MergeDNA against each of megamerge's variants, one at a time
and all together, with an equal pre-training budget, then the learned tokenizer and downstream MCC.

    python benchmarks/ablation.py --variants paper,single_layer,rotary --train-iters 100
    python benchmarks/ablation.py --report-only          # tabulate whatever has finished
    python benchmarks/ablation.py --list-variants

Per variant (train.py flags, see VARIANTS), each stage skipped when its output exists, so rerunning the
same command resumes:
  a) pretrain  OUT/<variant>/pretrain/        the tiny preset on the real genomes (benchmarks/
               pretrain_real_genomes.py's recipe), one rank, --train-iters N for every variant (an
               iteration budget, the same lr schedule; not a wall-clock one, since a shared machine's
               load varies); validation on the whole held-out species at the end (metrics.jsonl)
  b) portable  OUT/<variant>/portable/        tools/convert_checkpoint.py
  c) tokens    OUT/<variant>/tokens/          tools/analyze_tokens.py on a synthetic genome with ground
               truth (data_prep/synthetic.py --regions-bed, generated once under OUT/synthetic/)
  d) finetune  OUT/<variant>/finetune/<task>/ tools/finetune.py, LoRA, a fixed budget, on GUE tasks
               (read in place; dev capped to its first --dev-rows rows, a derived file under OUT/tasks/)
  e) scratch   OUT/<variant>/finetune_scratch/<task>/ the same with --from-scratch, for the variants in
               --scratch-variants (the same architecture, randomly initialised: the downstream reference)
  f) report    OUT/ablation.json and OUT/ablation.md: one row per variant found under OUT
Every subprocess runs with OMP_NUM_THREADS=1 under `nice`, one at a time per driver; run two drivers
over disjoint --variants or --stages to use two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tqdm import tqdm

from benchmarks.pretrain_real_genomes import SHARED_GENOMES, genome_files, prepare_corpus, pretrain_args
from megamerge.free_port import free_port

GUE = REPO.parent / "shared" / "data" / "benchmarks" / "GUE"
SEQ_LENGTH = 512
VALID_SPECIES = "Saccharomyces_cerevisiae"
REPEAT_CLASSES = ("tandem_repeat", "low_complexity")
DENSE_CLASS = "background"  # data_prep/synthetic.py's high-entropy class
LATENT_MERGE_FLAG = "--latent-merge-schedule"
SYNTHETIC_FASTA = "synth_sp00.upper.fa"
STAGES = ("pretrain", "portable", "tokens", "finetune", "scratch")
GUE_TASKS = ("tf/0", "tf/1", "prom/prom_300_tata")  # issue 15's (and issue 28's) three GUE tasks


class AblationError(Exception):
    pass


@dataclass(frozen=True)
class Variant:
    flags: tuple[str, ...]  # train.py flags besides the latent merge schedule
    # "per_block": the paper's ToMe merge inside the Latent Encoder; "single_layer": one burst
    latent_merge: str
    description: str


MEGAMERGE_OPTIONS = {
    "rotary": ("--rotary-merge",),
    "global_rank": ("--merge-selection", "global_rank"),
    "per_masked_base": ("--amtm-normalization", "per_masked_base"),
    "plain_latent_attention": ("--no-size-proportional-attention",),
}
VARIANTS = {
    "paper": Variant((), "per_block", "the paper's method (every default)"),
    "single_layer": Variant((), "single_layer", "the paper's method but megamerge's one-burst latent merge"),
    **{name: Variant(flags, "per_block", f"the paper's method but {' '.join(flags)}")
       for name, flags in MEGAMERGE_OPTIONS.items()},
    "all_megamerge": Variant(tuple(f for flags in MEGAMERGE_OPTIONS.values() for f in flags), "single_layer",
                             "all four megamerge options and the one-burst latent merge"),
}


# ------------------------------------------------------------------------------- pure parts
def train_flags(name: str) -> list[str]:
    """The variant's train.py flags, the latent merge schedule always explicit (its default changed
    once, from single_layer to per_block; an explicit flag keeps a row's meaning whatever the default)."""
    if name not in VARIANTS:
        raise AblationError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    variant = VARIANTS[name]
    return [*variant.flags, LATENT_MERGE_FLAG, variant.latent_merge]


def validation_losses(metrics_jsonl: Path) -> dict:
    """The last validation record of a train.py metrics.jsonl, and the last training record's
    MTR and bases per token."""
    records = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    valid = [r for r in records if r.get("split") == "valid"]
    train = [r for r in records if r.get("split", "train") == "train"]
    if not valid:
        raise AblationError(f"{metrics_jsonl}: no validation record (did the run finish?)")
    keys = ("loss", "mtr", "latent_mtr", "amtm", "perplexity", "masked_base_accuracy")
    out = {"iteration": valid[-1]["iteration"], **{k: valid[-1][k] for k in keys}}
    if train:
        out["train_mtr"] = train[-1]["mtr"]
        out["train_bases_per_token"] = train[-1]["bases_per_token"]
    return out


def token_summary(tokens: dict) -> dict:
    """Mean token length (bases per token) over the repeat and low-complexity classes together
    against the high-entropy background, their ratio, the same per base, and boundary scores."""
    regions = tokens["regions"]
    missing = [c for c in (*REPEAT_CLASSES, DENSE_CLASS) if c not in regions]
    if missing:
        raise AblationError(f"tokens.json has no region class {', '.join(missing)}")
    repeat_bases = sum(regions[c]["bases"] for c in REPEAT_CLASSES)
    repeat_tokens = sum(regions[c]["tokens"] for c in REPEAT_CLASSES)
    repeat_per_base = sum(regions[c]["mean_token_length_per_base"] * regions[c]["bases"]
                          for c in REPEAT_CLASSES) / repeat_bases
    dense = regions[DENSE_CLASS]
    bounds = tokens["boundaries"]
    return {
        "repeat_mean_token_length": repeat_bases / repeat_tokens,
        "background_mean_token_length": dense["mean_token_length"],
        "ratio": repeat_bases / repeat_tokens / dense["mean_token_length"],
        "repeat_per_base": repeat_per_base,
        "background_per_base": dense["mean_token_length_per_base"],
        "ratio_per_base": repeat_per_base / dense["mean_token_length_per_base"],
        "boundary_f1": bounds["f1"], "boundary_precision": bounds["precision"],
        "boundary_recall": bounds["recall"], "boundary_chance_precision": bounds.get("chance_precision"),
        "inference_mode": tokens["inference_mode"]["mode"],
    }


def finetune_summary(results: dict) -> dict:
    """A finetune.py results.json -> the headline metric's mean ± sample std over seeds (recomputed
    from the seeds, so a reader can check them), the per-seed values and the dev mean."""
    metric = results["metric"]
    values = [s["test"][metric] for s in results["per_seed"]]
    return {"metric": metric, "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": values,
            "dev_mean": statistics.fmean(s["dev"][metric] for s in results["per_seed"])}


def format_mcc(summary: dict | None) -> str:
    if summary is None:
        return "–"
    return f"{summary['mean']:.3f} ± {summary['std']:.3f} ({len(summary['seeds'])})"


def suite_mean(per_task: dict[str, dict | None]) -> float | None:
    """Mean over tasks of the per-task mean over seeds; None unless every task has finished."""
    if not per_task or any(v is None for v in per_task.values()):
        return None
    return statistics.fmean(v["mean"] for v in per_task.values())


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: list[dict], tasks: list[str]) -> str:
    head = ["variant", "latent merge", "train.py flags", "val loss", "MTR", "latent MTR", "AMTM",
            "masked-base ppl", "masked-base acc", "tok. len repeat+LC", "tok. len background", "ratio",
            "boundary F1", *(f"{t} MCC" for t in tasks), "suite mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        val, tok = row.get("validation") or {}, row.get("tokens") or {}
        ratio = tok.get("ratio")
        cells = [row["variant"], row["latent_merge"], " ".join(row["flags"]),
                 *(_num(val.get(k)) for k in ("loss", "mtr", "latent_mtr", "amtm", "perplexity",
                                               "masked_base_accuracy")),
                 _num(tok.get("repeat_mean_token_length")), _num(tok.get("background_mean_token_length")),
                 "–" if ratio is None else f"{ratio:.2f}×", _num(tok.get("boundary_f1"), 4),
                 *(format_mcc(row["finetune"].get(t)) for t in tasks), _num(suite_mean(row["finetune"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pretraining_wins(row: dict, tasks: list[str]) -> tuple[int, int]:
    """(tasks where the pre-trained mean MCC beats from scratch, tasks where both have finished)."""
    both = [t for t in tasks if row["finetune"].get(t) and row.get("scratch", {}).get(t)]
    return sum(row["finetune"][t]["mean"] > row["scratch"][t]["mean"] for t in both), len(both)


# ------------------------------------------------------------------------------- stages
def run_logged(cmd: list[str], log: Path, nice: int) -> None:
    """Run one stage's command niced, one OpenMP thread, output to `log`; a failure names the log."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}  # {time.strftime('%F %T')}, load {os.getloadavg()[0]:.1f}\n")
        f.flush()
        done = subprocess.run(["nice", "-n", str(nice), *cmd], cwd=REPO, env=env, stdout=f,
                              stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise AblationError(f"{cmd[1] if len(cmd) > 1 else cmd[0]} exited {done.returncode}; see {log}")


def require_nice() -> None:
    """run_logged's subprocesses run under `nice`: fail before any work when it is missing."""
    if shutil.which("nice") is None:
        raise AblationError("`nice` is not on PATH")


@contextlib.contextmanager
def locked(path: Path):
    """Two drivers over one OUT prepare the shared inputs once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def prepare_inputs(out: Path, tasks: list[str], dev_rows: int) -> None:
    """The corpus, the synthetic genome and the capped task directories, each made once."""
    with locked(out / ".prepare.lock"):
        if not (out / "corpus" / "manifest.json").exists():
            prepare_corpus(genome_files(SHARED_GENOMES), out / "corpus", VALID_SPECIES, SEQ_LENGTH)
        if not (out / "synthetic" / "synthetic.json").exists():
            subprocess.run([sys.executable, "data_prep/synthetic.py", "--out", str(out / "synthetic"),
                            "--species", "1", "--length", "150000", "--records", "1", "--regions-bed",
                            "--no-progress"], cwd=REPO, check=True)
        if not (out / "synthetic" / SYNTHETIC_FASTA).exists():
            upper_case_copy(out / "synthetic" / "synth_sp00.fa.gz", out / "synthetic" / SYNTHETIC_FASTA)
        for task in tasks:
            capped_task(GUE / task, out / "tasks" / task, dev_rows)


def upper_case_copy(fasta_gz: Path, dest: Path) -> None:
    """The synthetic genome without its soft-masking (lower-case repeats). The Local Encoder's input is
    the base codes alone (soft-masking only weights the training loss), so this tokenizes identically,
    and it keeps the analysis independent of how a reader encodes the soft-mask."""
    with gzip.open(fasta_gz, "rt") as f:
        text = "".join(line if line.startswith(">") else line.upper() for line in f)
    dest.with_suffix(".tmp").write_text(text)
    dest.with_suffix(".tmp").replace(dest)


def capped_task(source: Path, dest: Path, dev_rows: int) -> None:
    """dest/train.csv and test.csv link to GUE's; dest/dev.csv is the header and the first dev_rows rows."""
    if (dest / "dev.csv").exists():
        return
    for split in ("train", "dev", "test"):
        if not (source / f"{split}.csv").is_file():
            raise AblationError(f"{source / f'{split}.csv'}: not found "
                                "(a GUE task directory needs train, dev, test)")
    dest.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        link = dest / f"{split}.csv"
        if not link.exists():
            link.symlink_to(source / f"{split}.csv")
    with (source / "dev.csv").open() as f:
        head = [line for _, line in zip(range(dev_rows + 1), f)]
    (dest / "dev.csv.tmp").write_text("".join(head))
    (dest / "dev.csv.tmp").replace(dest / "dev.csv")


def check_settings(vdir: Path, settings: dict, name: str = "variant.json") -> None:
    """Refuse to resume a directory (a variant's: its variant.json) written with other settings."""
    record = vdir / name
    if record.exists():
        old = json.loads(record.read_text())
        if old != settings:
            raise AblationError(f"{record} was written with other settings ({old}); now {settings}. "
                                "Use another --out or remove that directory")
        return
    vdir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings, indent=1) + "\n")


def pretrain(vdir: Path, corpus: Path, flags: list[str], args: argparse.Namespace) -> None:
    ckpt = vdir / "pretrain"
    status = ckpt / "exit_status.json"
    if status.exists() and json.loads(status.read_text())["iteration"] >= args.train_iters:
        return
    resume = ["--load", str(ckpt)] if (ckpt / "latest").exists() else []
    run_logged([str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "1", "--master_port",
                str(free_port()), *pretrain_args(corpus, ckpt, SEQ_LENGTH, args.train_iters, log_interval=10),
                *flags, *resume], vdir / "pretrain.log", args.nice)


def finetune_run(model: Path, task_dir: Path, out: Path, seeds: list[int], args: argparse.Namespace,
                 log: Path, extra: Sequence[str] = ()) -> None:
    """tools/finetune.py, LoRA at the fixed budget (args.lr, args.epochs, args.train_rows; batch 32),
    `extra` flags appended; skipped when OUT holds results of these seeds."""
    results = out / "results.json"
    if results.exists() and json.loads(results.read_text())["settings"]["seeds"] == seeds:
        return  # done with these seeds; with others it runs again (finetune.py rewrites OUT)
    run_logged([sys.executable, "tools/finetune.py", "--model", str(model), "--task", str(task_dir),
                "--out", str(out), "--method", "lora", "--lr", str(args.lr), "--epochs", str(args.epochs),
                "--seeds", ",".join(map(str, seeds)) + ",", "--batch-size", "32",
                "--max-train-samples", str(args.train_rows), "--no-progress", *extra], log, args.nice)


def finetune(vdir: Path, task: str, args: argparse.Namespace, scratch: bool) -> None:
    out = vdir / ("finetune_scratch" if scratch else "finetune") / task
    finetune_run(vdir / "portable", args.out / "tasks" / task, out, list(range(args.seeds)), args,
                 vdir / "finetune.log", ["--from-scratch"] if scratch else [])


def run_variant(name: str, args: argparse.Namespace) -> None:
    vdir = args.out / name
    flags = train_flags(name)
    check_settings(vdir, {"variant": name, "flags": flags, "latent_merge": VARIANTS[name].latent_merge,
                          "train_iters": args.train_iters, "seq_length": SEQ_LENGTH})
    py = sys.executable
    if "pretrain" in args.stages:
        pretrain(vdir, args.out / "corpus", flags, args)
    if "portable" in args.stages and not (vdir / "portable" / "config.json").exists():
        run_logged([py, "tools/convert_checkpoint.py", "--load", str(vdir / "pretrain"),
                    "--out", str(vdir / "portable")], vdir / "convert.log", args.nice)
    synthetic = args.out / "synthetic"
    if "tokens" in args.stages and not (vdir / "tokens" / "tokens.json").exists():
        run_logged([py, "tools/analyze_tokens.py", "--model", str(vdir / "portable"),
                    "--fasta", str(synthetic / SYNTHETIC_FASTA),
                    "--bed", str(synthetic / "synth_sp00.regions.bed"),
                    "--window", str(SEQ_LENGTH), "--out", str(vdir / "tokens"), "--no-progress"],
                   vdir / "tokens.log", args.nice)
    for task in args.tasks if "finetune" in args.stages else []:
        finetune(vdir, task, args, scratch=False)
    for task in args.tasks if "scratch" in args.stages and name in args.scratch_variants else []:
        finetune(vdir, task, args, scratch=True)


# ------------------------------------------------------------------------------- report
def variant_row(vdir: Path, tasks: list[str]) -> dict:
    settings = json.loads((vdir / "variant.json").read_text())
    metrics, tokens = vdir / "pretrain" / "metrics.jsonl", vdir / "tokens" / "tokens.json"
    row = {**settings, "validation": None, "tokens": None, "finetune": {}, "scratch": {}}
    with contextlib.suppress(AblationError):
        row["validation"] = validation_losses(metrics) if metrics.exists() else None
    if tokens.exists():
        row["tokens"] = token_summary(json.loads(tokens.read_text()))
    for kind in ("finetune", "scratch"):
        folder = vdir / ("finetune" if kind == "finetune" else "finetune_scratch")
        for task in tasks:
            results = folder / task / "results.json"
            row[kind][task] = finetune_summary(json.loads(results.read_text())) if results.exists() else None
    if not any(row["scratch"].values()):
        row["scratch"] = {}
    return row


def report(args: argparse.Namespace) -> str:
    names = [n for n in VARIANTS if (args.out / n / "variant.json").exists()]
    rows = [variant_row(args.out / n, args.tasks) for n in names]
    table = markdown_table(rows, args.tasks)
    scratch_rows = [{"variant": f"from scratch ({r['variant']} architecture)",
                     "latent_merge": r["latent_merge"], "flags": r["flags"], "finetune": r["scratch"]}
                    for r in rows if r["scratch"]]
    lines = [table]
    if scratch_rows:
        lines += ["", markdown_table(scratch_rows, args.tasks)]
        for row in rows:
            if row["scratch"]:
                wins, n = pretraining_wins(row, args.tasks)
                lines.append(f"\n{row['variant']}: pre-training beats from scratch on {wins} of {n} tasks.")
    md = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.md").write_text(md)
    (args.out / "ablation.json").write_text(json.dumps({"tasks": args.tasks, "rows": rows}, indent=1) + "\n")
    return md


# ------------------------------------------------------------------------------- CLI
def add_finetune_budget_flags(p: argparse.ArgumentParser) -> None:
    """The fixed fine-tuning budget's flags (finetune_run reads them), and the subprocesses' niceness."""
    p.add_argument("--train-rows", type=int, default=400, help="fine-tune on the first N training rows")
    p.add_argument("--dev-rows", type=int, default=300, help="dev capped to its first N rows")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (the best on dev is kept)")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (LoRA, constant)")
    p.add_argument("--nice", type=int, default=10, help="niceness of every subprocess")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "ablation",
                   help="output root (default runs/ablation)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated variants to run (default all)")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated stages to run (of {', '.join(STAGES)})")
    p.add_argument("--train-iters", type=int, default=150,
                   help="pre-training iterations of 8 x 512 bases, every variant")
    p.add_argument("--tasks", default=",".join(GUE_TASKS), help="GUE tasks, comma-separated")
    add_finetune_budget_flags(p)
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds")
    p.add_argument("--scratch-variants", default="paper",
                   help="variants whose architecture is also fine-tuned from scratch "
                        "(comma-separated; '' for none)")
    p.add_argument("--report-only", action="store_true", help="run nothing; write the table from what exists")
    p.add_argument("--list-variants", action="store_true",
                   help="print the variants and their flags, then exit")
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    args.variants = [v for v in args.variants.split(",") if v]
    args.stages = [s for s in args.stages.split(",") if s]
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.scratch_variants = [v for v in args.scratch_variants.split(",") if v]
    for name in args.variants + args.scratch_variants:
        if name not in VARIANTS:
            p.error(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    if unknown := set(args.stages) - set(STAGES):
        p.error(f"--stages: unknown {', '.join(sorted(unknown))}; known: {', '.join(STAGES)}")
    if args.train_iters < 10 or args.seeds < 1:
        p.error("--train-iters must be >= 10 and --seeds >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_variants:
        for name, v in VARIANTS.items():  # the flags train.py gets, the latent merge schedule included
            print(f"{name:24s} {' '.join(train_flags(name))}: {v.description}")
        return 0
    try:
        if not args.report_only:
            require_nice()
            prepare_inputs(args.out, args.tasks, args.dev_rows)
            for name in tqdm(args.variants, desc="variants", unit="variant"):
                run_variant(name, args)
        print(report(args))
    except AblationError as e:
        print(f"ablation.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
