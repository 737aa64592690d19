"""Zero-shot variant scoring against a known answer (issue 29, item 3): how well each score tells SNVs that
break a planted, conserved motif from SNVs in unconstrained background, on a synthetic genome whose
ground truth data_prep/synthetic.py wrote.

    python benchmarks/zero_shot.py                                   # the 20-minute recipe, both families
    python benchmarks/zero_shot.py --families mergedna --train-iters 300 --no-write
    python benchmarks/zero_shot.py --skip-train                      # score the models OUT already holds

Stages, each logged with its time:
  1. genome    OUT/genome/: one species (data_prep/synthetic.py --variants: <species>.variants.vcf, INFO
               MOTIF=1 motif-breaking, MOTIF=0 background; data_prep/synthetic_variants.py), or --genome DIR
  2. corpus    OUT/corpus/: the genome's FASTA through data_prep/prepare.py, the records whose id hashes
               below --valid-frac held out (data_prep/split.py)
  3. pretrain  per family, OUT/<family>/checkpoints/ -> portable/: megamerge/train.py with
               benchmarks/pretrain_real_genomes.py's recipe (tiny or carmania-tiny preset, global batch 8,
               the same lr schedule), a wall-clock budget (--train-minutes) or an iteration budget
               (--train-iters); then tools/convert_checkpoint.py
     random    OUT/<family>/random_init/: the same config built from train.py's seed: the weights the
               pre-training started from (a 1-iteration run at lr 0 converts to the same tensors)
  4. score     OUT/scores/<model>.tsv: every variant through megamerge.variant_scoring (the library of
               tools/score_variants.py; windows of --seq-length bases, the training length), and the
               order-k Markov log-likelihood ratio of the ALT and REF sequences under counts fitted on the
               training split, k and smoothing chosen by validation perplexity (benchmarks/markov_baseline.py)
  5. report    AUROC and AUPRC of each score (label 1 = motif-breaking; likelihood scores read negated),
               over all variants and over those on held-out records: OUT/zero_shot.json, OUT/zero_shot.md
               and, unless --no-write, the `Zero-shot variant scoring (issue 29)` section of BENCHMARKS.md

The variants are only ever scored: the models and the Markov counts see the genome, never a label. The
genome and corpus are rebuilt on every run (the same flags give the same bytes), so --skip-train scores
the models on exactly the genome they were trained on, and refuses a genome made with other flags.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import torch

from benchmarks.benchmarks_md import machine_line, update_section
from benchmarks.markov_baseline import best_setting, fit_and_validate, snv_log_likelihood_ratio
from benchmarks.pretrain_real_genomes import (
    FINAL_MARGIN_MINS,
    GLOBAL_BATCH,
    SCHEDULE_ITERS,
    holds_earlier_run,
    prepare_corpus,
    pretrain_args,
    time_budget_flags,
)
from data_prep import synthetic
from data_prep.split import SplitSpec
from data_prep.synthetic_variants import LABEL_FIELD
from megamerge.free_port import free_port
from megamerge.models.registry import build_model
from megamerge.output_dirs import written_then_renamed
from megamerge.portable import load_portable, read_portable_config, save_portable
from megamerge.variant_scoring.label_metrics import LabelMetricsError, label_metrics
from megamerge.variant_scoring.outputs import write_table
from megamerge.variant_scoring.reference import load_contigs, reference_mismatch
from megamerge.variant_scoring.run import ScoredVariants, score_variants
from megamerge.variant_scoring.scorers import Score, not_an_snv
from megamerge.variant_scoring.tally import Tally
from megamerge.variant_scoring.variants import Variant, read_vcf
from megamerge.vocabulary import encode

FAMILY_PRESETS = {"mergedna": "tiny", "carmania": "carmania-tiny"}
FAMILY_NAMES = {"mergedna": "MergeDNA", "carmania": "CARMANIA"}
SECTION = "Zero-shot variant scoring (issue 29)"
HEADLINE_SCORE = "masked_marginal"  # the target: pre-trained MergeDNA above random init and Markov
MARKOV_LLR = Score("markov_llr", "order-k Markov log p(ALT sequence) - log p(REF sequence), counts fitted on "
                   "the training split", higher_means_damaging=False)


class ZeroShotError(Exception):
    """A benchmark run that cannot go on: one line naming the flag, file or stage."""


@dataclass(frozen=True)
class Genome:
    directory: Path
    fastas: list[Path]  # one per species
    vcfs: list[Path]  # the species' variants, beside its FASTA
    settings: dict  # synthetic.json without its per-species details


# ------------------------------------------------------------------------------- pure parts
def model_name(family: str, trained: bool) -> str:
    return f"{FAMILY_NAMES[family]} {'pre-trained' if trained else 'random init'}"


def markov_scores(counts: np.ndarray, alpha: float, order: int, contigs: dict[str, np.ndarray],
                  variants: list[Variant]) -> np.ndarray:
    """The Markov log-likelihood ratio of each SNV [V, 1]."""
    return np.array([[snv_log_likelihood_ratio(counts, alpha, order, contigs[v.chrom], v.start,
                                               int(encode(v.alt)[0]))] for v in variants], dtype=np.float64)


def metric_rows(model: str, result: ScoredVariants, held_out_records: set[str]) -> list[dict]:
    """One row per score of `result`: AUROC and AUPRC over all its labelled variants and over those on
    held-out records (None where those hold one class only)."""
    labels = [v.label for v in result.variants]
    held_out = [v.label if v.chrom in held_out_records else None for v in result.variants]
    overall = label_metrics(result.scores, labels, result.columns)
    try:
        unseen = label_metrics(result.scores, held_out, result.columns)
    except LabelMetricsError:
        unseen = {}
    rows = []
    for score in result.columns:
        row = {"model": model, "score": score.name, **overall[score.name]}
        subset = unseen.get(score.name, {})
        row.update(held_out_auroc=subset.get("auroc"), held_out_auprc=subset.get("auprc"),
                   held_out_labelled=subset.get("labelled", 0))
        rows.append(row)
    return rows


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown_table(rows: list[dict]) -> str:
    head = ["model", "score", "AUROC", "AUPRC", "AUROC, held-out records", "AUPRC, held-out records",
            "variants (motif-breaking)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["model"], f"`{row['score']}`", _cell(row["auroc"]), _cell(row["auprc"]),
                 _cell(row["held_out_auroc"]), _cell(row["held_out_auprc"]),
                 f"{row['labelled']} ({row['positives']})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(rows: list[dict]) -> str:
    """The issue's question in one sentence: is the pre-trained MergeDNA's masked-marginal AUROC above
    both random init's and the Markov LLR's?"""
    auroc = {(row["model"], row["score"]): row["auroc"] for row in rows}
    trained = auroc.get((model_name("mergedna", trained=True), HEADLINE_SCORE))
    random_init = auroc.get((model_name("mergedna", trained=False), HEADLINE_SCORE))
    markov = max((row["auroc"] for row in rows if row["score"] == MARKOV_LLR.name), default=None)
    if trained is None or random_init is None or markov is None:
        return ("No verdict: this run lacks the pre-trained or random-init MergeDNA, or the Markov "
                "baseline.")
    beaten = [name for name, value in (("random init", random_init), ("the Markov LLR", markov))
              if trained > value]
    figures = (f"AUROC {trained:.3f}, against {random_init:.3f} at random init and {markov:.3f} for the best "
               "Markov order")
    if len(beaten) == 2:
        return f"**The pre-trained MergeDNA's masked marginal beats both baselines** ({figures})."
    if beaten:
        return f"**The pre-trained MergeDNA's masked marginal beats {beaten[0]} only** ({figures})."
    return f"**The pre-trained MergeDNA's masked marginal beats neither baseline** ({figures})."


# ------------------------------------------------------------------------------- stages
def log(message: str) -> None:
    print(f"[zero_shot {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(cmd: list[str], what: str) -> None:
    """A stage's subprocess: output to this console, one OpenMP thread per process (the ranks share the
    machine's cores), the repository importable; a failure names the stage and the command."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, check=False)
    if done.returncode != 0:
        raise ZeroShotError(f"{what} exited {done.returncode}: {shlex.join(cmd)}")


def read_genome(directory: Path) -> Genome:
    """A data_prep/synthetic.py --variants output: its FASTAs and VCFs, species by species."""
    truth_file = directory / "synthetic.json"
    if not truth_file.is_file():
        raise ZeroShotError(f"--genome {directory}: no synthetic.json (not a data_prep/synthetic.py output)")
    truth = json.loads(truth_file.read_text())
    if not truth.get("variants_per_species"):
        raise ZeroShotError(f"--genome {directory}: written without --variants, so it has no variants")
    fastas, vcfs = [], []
    for species in truth["species"]:
        fasta = next((directory / f"{species}{suffix}" for suffix in (".fa.gz", ".fa")
                      if (directory / f"{species}{suffix}").is_file()), None)
        vcf = directory / f"{species}{synthetic.VARIANTS_SUFFIX}"
        if fasta is None:
            raise ZeroShotError(f"--genome {directory}: no {species}.fa.gz or {species}.fa")
        if not vcf.is_file():
            raise ZeroShotError(f"--genome {directory}: no {vcf.name}")
        fastas.append(fasta)
        vcfs.append(vcf)
    return Genome(directory, fastas, vcfs, {k: v for k, v in truth.items() if k != "species"})


def genome_stage(args: argparse.Namespace) -> Genome:
    if args.genome is not None:
        return read_genome(args.genome)
    directory = args.out / "genome"
    wanted = {"seed": args.seed, "length_per_species": args.genome_length,
              "records_per_species": args.records, "variants_per_species": args.variants}
    if args.skip_train and (directory / "synthetic.json").is_file():
        made = read_genome(directory).settings
        if made != wanted:
            raise ZeroShotError(f"--skip-train: {directory} was generated with {made}, these flags ask for "
                                f"{wanted}; score with the flags the models were trained with")
    log(f"genome: 1 species x {args.genome_length:,} bp in {args.records} records, {args.variants} variants "
        f"-> {directory}")
    shutil.rmtree(directory, ignore_errors=True)  # this script's own folder: no file of an older run stays
    try:
        synthetic.generate(directory, 1, args.genome_length, args.records, args.seed, compress=True,
                           progress=False, regions_bed=True, variants=args.variants)
    except ValueError as e:
        raise ZeroShotError(str(e)) from None
    return read_genome(directory)


def corpus_stage(genome: Genome, args: argparse.Namespace) -> dict:
    """The corpus -> its manifest's totals; refused without a held-out record (the Markov order and the
    held-out AUROC are chosen and measured there)."""
    corpus = args.out / "corpus"
    log(f"corpus: {len(genome.fastas)} FASTA, sequences of {args.seq_length}, --valid-frac {args.valid_frac} "
        f"-> {corpus}")
    try:
        prepare_corpus(genome.fastas, corpus, None, args.seq_length, args.valid_frac)
    except subprocess.CalledProcessError as e:
        raise ZeroShotError(f"data_prep/prepare.py exited {e.returncode} on {genome.directory}") from None
    totals = json.loads((corpus / "manifest.json").read_text())["totals"]
    if totals["samples"]["valid"] == 0:
        raise ZeroShotError(f"--valid-frac {args.valid_frac} holds out no record of {genome.directory}: "
                            "raise it, or --records (the Markov order is chosen on held-out records)")
    return totals


def held_out_records(contigs: dict[str, np.ndarray], valid_frac: float) -> set[str]:
    """The records prepare.py held out (the same hash of the record id, data_prep/split.py)."""
    split = SplitSpec(valid_frac=valid_frac)
    return {name for name in contigs if split.split_of("", name) == "valid"}  # the species plays no part


def pretrain_stage(family: str, args: argparse.Namespace) -> None:
    """train.py under the DeepSpeed launcher, then the checkpoint to OUT/<family>/portable."""
    folder = args.out / family
    ckpt, portable = folder / "checkpoints", folder / "portable"  # empty: run_benchmark checked
    iters = args.train_iters or args.schedule_iters
    budget = [] if args.train_iters else time_budget_flags(args.train_minutes)
    log(f"pre-training {family} ({FAMILY_PRESETS[family]}) on {args.nproc} rank(s): "
        + (f"{iters} iterations" if args.train_iters else
           f"{args.train_minutes:g} minutes (an lr schedule of {iters} iterations)"))
    run([str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(args.nproc), "--master_port",
         str(free_port()), *pretrain_args(args.out / "corpus", ckpt, args.seq_length, iters,
                                          log_interval=max(1, min(50, iters // 10)),
                                          model=FAMILY_PRESETS[family]),
         "--seed", str(args.seed), *budget], f"pre-training {family}")
    run([sys.executable, "tools/convert_checkpoint.py", "--load", str(ckpt), "--out", str(portable),
         "--quiet"], f"converting the {family} checkpoint")


def random_init_stage(family: str, args: argparse.Namespace) -> None:
    """OUT/<family>/random_init: the trained model's config, built as train.py builds it from the same
    seed: the weights its pre-training started from, never trained."""
    trained, dest = args.out / family / "portable", args.out / family / "random_init"
    config = read_portable_config(trained)
    torch.manual_seed(args.seed)  # megamerge/training/trainer.py seeds this way right before building
    model = build_model(config["family"], config["model_config"])
    shutil.rmtree(dest, ignore_errors=True)
    save_portable(model, dest, extra={"source": "random init, never trained (benchmarks/zero_shot.py)"})


def training_summary(family: str, out: Path) -> dict | None:
    """Iterations, stop reason and final validation of OUT/<family>/checkpoints, if it holds a run."""
    ckpt = out / family / "checkpoints"
    if not (ckpt / "exit_status.json").is_file():
        return None
    status = json.loads((ckpt / "exit_status.json").read_text())
    records = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines() if line.strip()]
    valid = [r for r in records if r.get("split") == "valid"]
    return {"preset": FAMILY_PRESETS[family], "iterations": status["iteration"],
            "schedule_iterations": status["train_iters"], "stop": status["reason"],
            "samples_seen": status["consumed_samples"],
            "valid_perplexity": valid[-1]["perplexity"] if valid else None}


def check_variants(variants: list[Variant], contigs: dict[str, np.ndarray], genome: Genome) -> None:
    """The benchmark's VCFs hold SNVs on their FASTA only: anything else is a genome from elsewhere."""
    for variant in variants:
        if variant.chrom not in contigs:
            problem = "no such record in the genome's FASTA"
        else:
            problem = not_an_snv(variant) or reference_mismatch(contigs[variant.chrom], variant)
        if problem:
            raise ZeroShotError(f"{genome.directory}: variant {variant.chrom}:{variant.pos} "
                                f"{variant.ref}>{variant.alt}: {problem}")


def markov_settings(stats: dict, requested: list[int | None], auto_max_order: int) -> list[dict]:
    """The Markov baselines to report: per requested order (None: the order of lowest validation
    perplexity among 0..auto_max_order), the order, its smoothing (always chosen by validation
    perplexity) and that perplexity; an order asked for twice is reported once."""
    settings = {}
    for wanted in requested:
        order, alpha = best_setting(stats, list(range(auto_max_order + 1)) if wanted is None else [wanted])
        nll, _, bases = stats[(order, alpha)]
        chosen = ("order and smoothing by validation perplexity" if wanted is None
                  else "smoothing by validation perplexity")
        if order not in settings or wanted is None:
            settings[order] = {"order": order, "alpha": alpha, "chosen": chosen,
                               "valid_perplexity": float(np.exp(nll / max(bases, 1)))}
    return list(settings.values())


def markov_stage(args: argparse.Namespace, contigs: dict[str, np.ndarray], variants: list[Variant]
                 ) -> tuple[dict[str, ScoredVariants], list[dict]]:
    """The Markov log-likelihood ratio of every variant at each --markov-k order -> ({row name: scores},
    the settings)."""
    max_order = max(args.markov_max_order if k is None else k for k in args.markov_k)
    log(f"Markov: counts of orders 0..{max_order} on the training split, smoothing (and `auto`'s order) "
        "chosen by validation perplexity")
    counts, stats = fit_and_validate(str(args.out / "corpus"), max_order)
    results, settings = {}, markov_settings(stats, args.markov_k, args.markov_max_order)
    for setting in settings:
        order, alpha = setting["order"], setting["alpha"]
        log(f"Markov: order {order}, add-{alpha} ({setting['chosen']})")
        scores = markov_scores(counts[order], alpha, order, contigs, variants)
        results[f"order-{order} Markov"] = ScoredVariants(variants, scores, (MARKOV_LLR,), Tally(), Tally())
    return results, settings


def score_stage(args: argparse.Namespace, genome: Genome) -> dict:
    """Every model and Markov order on every variant -> {"rows": metric rows, "markov": the Markov
    settings, "variants", "held_out_variants": counts}; each model's scores in OUT/scores/<model>.tsv."""
    variants = [v for vcf in genome.vcfs for v in read_vcf(vcf, LABEL_FIELD)]
    contigs, fasta_ids = {}, set()
    for fasta in genome.fastas:
        found, ids = load_contigs(fasta, {v.chrom for v in variants})
        contigs.update(found)
        fasta_ids |= ids
    check_variants(variants, contigs, genome)
    held_out = held_out_records(contigs, args.valid_frac)
    results = {}
    for family in args.families:
        for trained, folder in ((True, "portable"), (False, "random_init")):
            name = model_name(family, trained)
            log(f"scoring {len(variants)} variants with {name} ({args.out / family / folder})")
            model = load_portable(args.out / family / folder)
            results[name] = score_variants(model, variants, contigs, fasta_ids, genome.directory,
                                           args.seq_length, args.batch_size, args.both_strands)
    markov, settings = markov_stage(args, contigs, variants)
    results.update(markov)
    scores_dir = args.out / "scores"
    scores_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, result in results.items():
        file_name = name.lower().replace(" ", "_").replace("-", "_") + ".tsv"
        with written_then_renamed(scores_dir / file_name) as partial:
            write_table(partial, result)
        rows += metric_rows(name, result, held_out)
    return {"rows": rows, "markov": settings, "variants": len(variants),
            "held_out_variants": sum(v.chrom in held_out for v in variants)}


def data_paragraph(args: argparse.Namespace, genome: Genome, facts: dict) -> str:
    settings, samples = genome.settings, facts["corpus_samples"]
    return (f"Genome: `data_prep/synthetic.py --variants` (seed {settings['seed']}), "
            f"{settings['length_per_species']:,} bases per species in {settings['records_per_species']} "
            "records. "
            f"Variants: {facts['variants']} SNVs, half changing a consensus base of a planted motif instance "
            "(label 1), half in background at least 20 bases from any other region (label 0). "
            f"Corpus: sequences of {args.seq_length}, {samples['train']:,} training and {samples['valid']:,} "
            f"held-out samples (the records whose id hashes below --valid-frac {args.valid_frac}); "
            f"{facts['held_out_variants']} of the variants lie on held-out records.")


def models_paragraph(args: argparse.Namespace, facts: dict) -> str:
    runs = [f"{FAMILY_NAMES[family]} `{run['preset']}`, {run['iterations']} iterations (lr schedule "
            f"{run['schedule_iterations']}; stop: {run['stop']}), "
            f"{run['samples_seen'] * args.seq_length / 1e6:.1f}M bases seen"
            + (f", validation perplexity {run['valid_perplexity']:.3f}" if run["valid_perplexity"] else "")
            for family, run in facts["training"].items() if run]
    markov = "; ".join(f"order {m['order']}, add-{m['alpha']} smoothing ({m['chosen']}; validation "
                       f"perplexity {m['valid_perplexity']:.3f})" for m in facts["markov"])
    return (f"Training: benchmarks/pretrain_real_genomes.py's recipe (global batch {GLOBAL_BATCH}, lr 2e-3 "
            "cosine to 2e-4): " + ("; ".join(runs) if runs else "none in this run (--skip-train)") + ". "
            "Random init: the weights that pre-training started from (the same config and seed), never "
            "trained. "
            f"Markov: {markov}; counts from the training split, the order-k LLR's"
            " score is log p(ALT) − log p(REF) of the sequence, the k + 1 terms the SNV touches.")


def report_body(args: argparse.Namespace, argv: list[str], genome: Genome, facts: dict) -> str:
    strands = "both strands averaged" if args.both_strands else "forward strand"
    return "\n".join([
        f"Command: `{shlex.join(['python', 'benchmarks/zero_shot.py', *argv])}`",
        f"Run {facts['started']} to {facts['finished']} ({facts['minutes']:.1f} minutes).",
        (f"Machine: {machine_line()}; {args.nproc} CPU rank(s) for training (DeepSpeed ZeRO-2, fp32); "
         f"load average (1/5/15 min) {facts['load_before']} before, {facts['load_after']} after."),
        "",
        data_paragraph(args, genome, facts),
        models_paragraph(args, facts),
        "",
        markdown_table(facts["rows"]),
        "",
        ("AUROC and AUPRC read the likelihood scores (`masked_marginal`, `llr`, `markov_llr`) negated and "
         "`embedding_distance` as it is (megamerge/variant_scoring/label_metrics.py). Scoring windows: "
         f"{args.seq_length} bases centred on the variant, {strands}."),
        "",
        verdict(facts["rows"]),
    ])


def run_benchmark(args: argparse.Namespace, argv: list[str]) -> dict:
    started, load_before = time.time(), os.getloadavg()
    for family in () if args.skip_train else args.families:  # before anything is rebuilt
        earlier = [d for d in (args.out / family / "checkpoints", args.out / family / "portable")
                   if holds_earlier_run(d)]
        if earlier:
            raise ZeroShotError(f"{earlier[0]} holds an earlier run; score it with --skip-train, or give "
                                "a new --out (nothing was deleted)")
    args.out.mkdir(parents=True, exist_ok=True)
    genome = genome_stage(args)
    totals = corpus_stage(genome, args)
    for family in args.families:
        if args.skip_train:
            trained = args.out / family / "portable"
            if not (trained / "config.json").is_file():
                raise ZeroShotError(f"--skip-train: no trained {family} model at {trained} (run once "
                                    "without --skip-train)")
        else:
            pretrain_stage(family, args)
        random_init_stage(family, args)
    scored = score_stage(args, genome)
    finished = time.time()
    facts = {
        "command": ["python", "benchmarks/zero_shot.py", *argv],
        "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%d %H:%M", time.localtime(finished)),
        "minutes": (finished - started) / 60,
        "load_before": "/".join(f"{x:.2f}" for x in load_before),
        "load_after": "/".join(f"{x:.2f}" for x in os.getloadavg()),
        "machine": machine_line(), "genome": {"directory": str(genome.directory), **genome.settings},
        "corpus_samples": totals["samples"],
        "training": {family: training_summary(family, args.out) for family in args.families},
        **scored,
    }
    body = report_body(args, argv, genome, facts)
    with written_then_renamed(args.out / "zero_shot.json") as partial:
        partial.write_text(json.dumps(facts, indent=1) + "\n")
    with written_then_renamed(args.out / "zero_shot.md") as partial:
        partial.write_text(f"## {SECTION}\n\n{body}\n")
    return {"body": body, **facts}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "zero_shot",
                   help="output root (default runs/zero_shot)")
    p.add_argument("--families", default="mergedna,carmania",
                   help="comma-separated model families to pre-train and score, of "
                        f"{', '.join(FAMILY_PRESETS)} (default both)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--train-minutes", type=float, default=20.0,
                        help="wall-clock budget of each family's training command, start-up to final "
                             "checkpoint; it stops there or at the end of its --schedule-iters lr schedule, "
                             "whichever comes first (default 20: the issue's 20-minute recipe)")
    budget.add_argument("--train-iters", type=int, default=None,
                        help="an iteration budget instead (the lr schedule's length; no time limit)")
    p.add_argument("--schedule-iters", type=int, default=SCHEDULE_ITERS,
                   help="the lr schedule of a --train-minutes run (default 900, pretrain_real_genomes.py's: "
                        "MergeDNA tiny did 656 of them in 20 minutes on 2 CPU ranks; CARMANIA, several times "
                        "faster, ends its schedule early, so both see at most the same bases)")
    p.add_argument("--skip-train", action="store_true",
                   help="score the portable models an earlier run left in OUT/<family>/portable")
    p.add_argument("--nproc", type=int, default=2, help="training ranks (default 2)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the genome, its variants, train.py and the random init (default 0)")
    g = p.add_argument_group("genome and corpus")
    g.add_argument("--genome", type=Path, default=None,
                   help="use this data_prep/synthetic.py --variants output instead of generating OUT/genome "
                        "(--genome-length, --records and --variants are then not used)")
    g.add_argument("--genome-length", type=int, default=2_000_000,
                   help="bases of the one species (default 2M)")
    g.add_argument("--records", type=int, default=8, help="records it is cut into (default 8)")
    g.add_argument("--variants", type=int, default=1000,
                   help="SNVs, half motif-breaking, half background (default 1000: each model scores them in "
                        "minutes on 2 cores)")
    g.add_argument("--valid-frac", type=float, default=0.1,
                   help="records held out from training, by a hash of their id (default 0.1: with 8 records, "
                        "chr2)")
    g.add_argument("--seq-length", type=int, default=512,
                   help="bases per training sequence and per scoring window (default 512)")
    g = p.add_argument_group("scoring")
    g.add_argument("--markov-k", default="auto,8",
                   help="the Markov baseline's orders, comma-separated, one row each; auto: the order of "
                        "lowest validation perplexity among 0..--markov-max-order (default auto,8: the "
                        "order the data favour, and one long enough for a context inside a planted motif, "
                        "8-20 bases, to identify it)")
    g.add_argument("--markov-max-order", type=int, default=10,
                   help="the largest order `auto` tries (default 10)")
    g.add_argument("--batch-size", type=int, default=16, help="variants per forward pass (default 16)")
    g.add_argument("--both-strands", action="store_true", help="average each model score over both strands")
    p.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    args.genome = args.genome.resolve() if args.genome else None  # the stages run from the repository
    args.families = [f for f in args.families.split(",") if f]
    if not args.families or set(args.families) - set(FAMILY_PRESETS):
        p.error(f"--families {','.join(args.families)}: choose among {', '.join(FAMILY_PRESETS)}")
    if min(args.train_iters or 1, args.schedule_iters) < 1:
        p.error("--train-iters and --schedule-iters must be >= 1")
    if args.train_iters is None and args.train_minutes <= FINAL_MARGIN_MINS:
        p.error(f"--train-minutes must exceed the {FINAL_MARGIN_MINS}-minute margin kept for the final "
                "validation and checkpoint")
    for flag, value, least in (("--nproc", args.nproc, 1), ("--records", args.records, 1),
                               ("--variants", args.variants, 2), ("--seq-length", args.seq_length, 16),
                               ("--batch-size", args.batch_size, 1)):
        if value < least:
            p.error(f"{flag} must be >= {least}")
    try:
        args.markov_k = [None if k == "auto" else int(k) for k in args.markov_k.split(",") if k]
    except ValueError:
        p.error(f"--markov-k {args.markov_k}: give orders (whole numbers >= 0) or auto, comma-separated")
    if not args.markov_k or any(k is not None and k < 0 for k in args.markov_k) or args.markov_max_order < 0:
        p.error("--markov-k needs at least one order, each >= 0 (or auto), and --markov-max-order >= 0")
    if not 0 < args.valid_frac < 1:
        p.error("--valid-frac must lie in (0, 1): the Markov order is chosen on held-out records")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        result = run_benchmark(args, argv)
    except ZeroShotError as e:
        print(f"zero_shot.py: error: {e}", file=sys.stderr)
        return 2
    print(result["body"])
    if not args.no_write:
        update_section(SECTION, result["body"])
        log(f"wrote the '{SECTION}' section of BENCHMARKS.md")
    log(f"wrote {args.out / 'zero_shot.json'} and {args.out / 'zero_shot.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
