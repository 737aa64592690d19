"""Learned vs random vs fixed merges, at evaluation (issue 28, item 1): a trained MergeDNA scored on the
held-out species with its own (learned) merge decisions and with the two controls, then, optionally,
LoRA fine-tuned on GUE tasks with the learned and the random tokenizer.

    python benchmarks/tokenizer_ablation.py --model PORTABLE --data CORPUS --out OUT
    python benchmarks/tokenizer_ablation.py --model PORTABLE --data CORPUS --out OUT \\
        --finetune-tasks tf/0,tf/1,prom/prom_300_tata --finetune-seeds 0,1,2

The tokenizers (MergeDNAConfig.merge_decisions, models/mergedna/merge_decisions.py), every other
weight the trained model's:
  learned  the Local Encoder's grouping scores (the paper)
  random   chance pairs under the same per-window merge counts, over --random-seeds global-RNG seeds
  fixed    chunks of N/L bases
  learned_global_rank  (on request) the learned scores ranked across the whole sequence instead of per
           window (MergeDNAConfig.merge_selection="global_rank"): the content-adaptive merge budget the
           per-window rule forbids, at the same total L

Stages, each skipped when its output exists, so rerunning the same command resumes:
  a) evaluate  OUT/eval/<run>.json (learned, random-seed<k>, fixed): train.py's validation protocol
               (megamerge/training/evaluation.py, training/batches.ValidBatches) on the corpus's valid
               split, the model in eval mode (L = eval_compression * N), every random draw of the
               objective keyed by (--seed, sample index). The draws are the same for every tokenizer,
               but AMTM masks whole tokens of pass 2's latent groups, so which bases are masked (and
               how many) follows each tokenizer's own tokens
  b) finetune  OUT/finetune/<tokenizer>/<task>/ tools/finetune.py --merge-decisions <tokenizer>, LoRA
               at benchmarks/ablation.py's fixed budget (dev capped to --dev-rows, OUT/tasks/<task>/)
  c) report    OUT/ablation.json and OUT/ablation.md from whatever has finished
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch
from tqdm import tqdm

from benchmarks.ablation import (
    GUE,
    GUE_TASKS,
    AblationError,
    add_finetune_budget_flags,
    capped_task,
    check_settings,
    finetune_run,
    finetune_summary,
    format_mcc,
    require_nice,
)
from megamerge.data.shards import load_manifest
from megamerge.models.mergedna.merge_decisions import fixed_chunk
from megamerge.models.mergedna.spec import MERGEDNA_SPEC
from megamerge.portable import load_portable, read_portable_config
from megamerge.training.batches import ValidBatches
from megamerge.training.evaluation import validation_result, validation_sums
from megamerge.training.objective import PretrainingObjective
from megamerge.vocabulary import MASK, PAD
from tools.finetune import MERGE_DECISIONS

EVAL_METRICS = ("loss", "mtr", "latent_mtr", "amtm", "masked_base_perplexity", "masked_base_accuracy",
                "chunk_boundary_agreement")
RELATIVE_TO_LEARNED = ("mtr", "masked_base_perplexity")  # <metric>_relative_change: (x - learned) / learned
FINETUNE_TOKENIZERS = ("learned", "random")
# Evaluation-only tokenizer: (merge_decisions, merge_selection); the others keep the model's selection.
SELECTION_VARIANTS = {"learned_global_rank": ("learned", "global_rank")}
EVAL_TOKENIZERS = (*MERGE_DECISIONS, *SELECTION_VARIANTS)


class TokenizerAblationError(AblationError):
    pass


# ------------------------------------------------------------------------------- evaluation
class ChunkAgreement:
    """While open, a forward hook on the Local Encoder tallies how often its tokenization agrees with
    the N/L-base chunk grid (merge_decisions.fixed_chunk) on "is there a token boundary between bases
    n and n+1", over every adjacent pair of real bases. Only unmasked inputs count (pass 1; pass 3
    tokenizes AMTM's masked input), so each sample is counted once."""

    def __init__(self, local_encoder: torch.nn.Module):
        self.module, self.agree, self.pairs, self.handle = local_encoder, 0, 0, None

    def __enter__(self) -> Self:
        self.handle = self.module.register_forward_hook(self.tally)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def tally(self, module, inputs, state) -> None:
        input_ids, targets = inputs[0], inputs[1]  # [B, N], [B]
        if bool((input_ids == MASK).any()):
            return
        base_valid = input_ids != PAD  # [B, N], padding only as a suffix
        B, N = input_ids.shape
        positions = torch.arange(N, device=input_ids.device).expand(B, N)
        chunk_cut = fixed_chunk(positions, base_valid.sum(1), targets).diff(dim=1) != 0  # [B, N-1]
        token_cut = state.assign.diff(dim=1) != 0  # [B, N-1]
        pair_valid = base_valid[:, 1:]  # both bases real
        self.agree += int(((chunk_cut == token_cut) & pair_valid).sum())
        self.pairs += int(pair_valid.sum())

    @property
    def agreement(self) -> float | None:
        return self.agree / self.pairs if self.pairs else None


def valid_batches(data: Path, seq_length: int, micro: int, seed: int,
                  max_samples: int | None) -> ValidBatches:
    """train.py's validation batches (ValidBatches, one rank): the first micro-batches of the valid split."""
    eval_iters = sys.maxsize if max_samples is None else math.ceil(max_samples / micro)
    args = argparse.Namespace(mock_data=False, data=str(data), seq_length=seq_length, seed=seed,
                              eval_iters=eval_iters)
    valid = ValidBatches(args, micro, 1, 0)
    if not valid.available:
        raise TokenizerAblationError(f"{data}: no valid split (the held-out species); "
                                     "prepare the corpus with --valid-species or --valid-frac")
    return valid


def capped(batches: Iterable, max_samples: int | None) -> Iterator:
    """The batches, the last one cut so that at most max_samples samples are scored."""
    left = sys.maxsize if max_samples is None else max_samples
    for ids, index in batches:
        if left <= 0:
            return
        yield ids[:left], index[:left]
        left -= ids.shape[0]


def evaluate_tokenizer(model, decisions: str, rng_seed: int | None, args: argparse.Namespace) -> dict:
    """The validation numbers of `model` with its merge decisions set to `decisions`; `rng_seed`
    seeds the global RNG that random merges draw from."""
    trained_selection = model.cfg.merge_selection
    model.cfg.merge_decisions, model.cfg.merge_selection = SELECTION_VARIANTS.get(
        decisions, (decisions, trained_selection))
    model.eval()
    if rng_seed is not None:
        torch.manual_seed(rng_seed)
    micro, cap = args.micro_batch_size, args.max_valid_samples
    valid = valid_batches(args.data, args.seq_length, micro, args.seed, cap)
    total = math.ceil(min(cap or sys.maxsize, args.valid_samples) / micro)
    batches = tqdm(capped(valid, cap), total=total, unit="batch", leave=False,
                   desc=decisions if rng_seed is None else f"{decisions} seed {rng_seed}",
                   disable=args.no_progress)
    start = time.perf_counter()
    with ChunkAgreement(model.local_encoder) as chunks:
        sums = validation_sums(PretrainingObjective(model), batches, args.seed, args.device, MERGEDNA_SPEC)
    result = validation_result(sums, MERGEDNA_SPEC)
    model.cfg.merge_selection = trained_selection
    if result is None:
        raise TokenizerAblationError(f"{args.data}: the valid split gave no sample")
    return {**{k: result[k] for k in MERGEDNA_SPEC.loss_keys},
            "masked_base_perplexity": result["perplexity"],
            "masked_base_accuracy": result[MERGEDNA_SPEC.eval_accuracy_name],
            "chunk_boundary_agreement": chunks.agreement, "samples": int(sums["samples"]),
            "scored_bases": int(sums["scored"]), "merge_decisions": decisions, "rng_seed": rng_seed,
            "wall_s": time.perf_counter() - start}


def eval_runs(args: argparse.Namespace) -> dict[str, tuple[str, int | None]]:
    """Run name -> (merge decisions, global-RNG seed) of every evaluation asked for."""
    runs = {}
    for name in args.tokenizers:
        seeds = range(args.random_seeds) if name == "random" else [None]
        runs.update({name if s is None else f"{name}-seed{s}": (name, s) for s in seeds})
    return runs


def evaluate_stage(args: argparse.Namespace) -> None:
    folder = args.out / "eval"
    check_settings(folder, eval_settings(args), "settings.json")
    todo = {run: what for run, what in eval_runs(args).items() if not (folder / f"{run}.json").exists()}
    if not todo:
        return
    model = load_portable(args.model).to(args.device)
    for run, (decisions, rng_seed) in tqdm(todo.items(), desc="tokenizers", unit="run",
                                           disable=args.no_progress):
        result = evaluate_tokenizer(model, decisions, rng_seed, args)
        (folder / f"{run}.tmp").write_text(json.dumps(result, indent=1) + "\n")
        (folder / f"{run}.tmp").replace(folder / f"{run}.json")


def eval_settings(args: argparse.Namespace) -> dict:
    """What an OUT/eval/ result depends on (a rerun with others is refused)."""
    return {"model": str(args.model), "data": str(args.data), "seq_length": args.seq_length,
            "max_valid_samples": args.max_valid_samples, "micro_batch_size": args.micro_batch_size,
            "seed": args.seed}


# ------------------------------------------------------------------------------- fine-tuning
def finetune_stage(args: argparse.Namespace) -> None:
    folder = args.out / "finetune"
    check_settings(folder, finetune_settings(args), "settings.json")
    for task in tqdm(args.finetune_tasks, desc="finetune tasks", unit="task", disable=args.no_progress):
        capped_task(args.gue / task, args.out / "tasks" / task, args.dev_rows)
        for name in args.finetune_tokenizers:
            finetune_run(args.model, args.out / "tasks" / task, folder / name / task, args.finetune_seeds,
                         args, folder / name / "finetune.log", ["--merge-decisions", name])


def finetune_settings(args: argparse.Namespace) -> dict:
    return {"model": str(args.model), "gue": str(args.gue), "train_rows": args.train_rows,
            "dev_rows": args.dev_rows, "epochs": args.epochs, "lr": args.lr, "method": "lora"}


# ------------------------------------------------------------------------------- report
def tokenizer_entry(runs: list[dict]) -> dict:
    """One tokenizer's numbers: the run's, or over several RNG seeds their mean, sample std and each."""
    if len(runs) == 1:
        return dict(runs[0])
    entry = {k: statistics.fmean(r[k] for r in runs) for k in EVAL_METRICS if runs[0][k] is not None}
    entry["std"] = {k: statistics.stdev(r[k] for r in runs) for k in entry}
    # AMTM's masked bases follow the tokens, so the scored count varies between seeds: their mean
    entry.update(samples=runs[0]["samples"], scored_bases=statistics.fmean(r["scored_bases"] for r in runs),
                 merge_decisions=runs[0]["merge_decisions"], rng_seeds=[r["rng_seed"] for r in runs],
                 per_seed=runs, wall_s=sum(r["wall_s"] for r in runs))
    return entry


def eval_report(args: argparse.Namespace) -> dict[str, dict]:
    folder, entries = args.out / "eval", {}
    for name in args.tokenizers:
        files = [folder / f"{run}.json" for run, (tok, _) in eval_runs(args).items() if tok == name]
        if files and all(f.exists() for f in files):
            entries[name] = tokenizer_entry([json.loads(f.read_text()) for f in files])
    learned = entries.get("learned")
    for name, entry in entries.items():
        if learned is not None and name != "learned":
            for key in RELATIVE_TO_LEARNED:
                entry[f"{key}_relative_change"] = (entry[key] - learned[key]) / learned[key]
    return entries


def finetune_report(args: argparse.Namespace) -> dict:
    tasks = {}
    for task in args.finetune_tasks:
        row = {}
        for name in args.finetune_tokenizers:
            results = args.out / "finetune" / name / task / "results.json"
            row[name] = finetune_summary(json.loads(results.read_text())) if results.exists() else None
        if row.get("learned") and row.get("random"):
            row["random_minus_learned"] = row["random"]["mean"] - row["learned"]["mean"]
        tasks[task] = row
    return {"settings": {**finetune_settings(args), "seeds": args.finetune_seeds,
                         "tokenizers": list(args.finetune_tokenizers)}, "tasks": tasks}


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _cell(entry: dict, key: str, digits: int = 3) -> str:
    value, std = entry.get(key), entry.get("std", {}).get(key)
    return _num(value, digits) + ("" if std is None else f" ± {std:.{digits}f}")


def markdown(entries: dict[str, dict], finetune: dict | None) -> str:
    head = ["tokenizer", "MTR", "MTR vs learned", "latent MTR", "AMTM", "loss", "masked-base ppl",
            "ppl vs learned", "masked-base acc", "chunk-boundary agreement", "samples"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in entries.items():
        runs = f" ({len(e['per_seed'])} seeds)" if "per_seed" in e else ""
        change = {k: e.get(f"{k}_relative_change") for k in RELATIVE_TO_LEARNED}
        cells = [name + runs, _cell(e, "mtr"),
                 "–" if change["mtr"] is None else f"{100 * change['mtr']:+.1f}%",
                 _cell(e, "latent_mtr"), _cell(e, "amtm"), _cell(e, "loss"),
                 _cell(e, "masked_base_perplexity"),
                 "–" if change["masked_base_perplexity"] is None
                 else f"{100 * change['masked_base_perplexity']:+.1f}%",
                 _cell(e, "masked_base_accuracy"), _cell(e, "chunk_boundary_agreement"), str(e["samples"])]
        lines.append("| " + " | ".join(cells) + " |")
    if finetune and finetune["tasks"]:
        names = finetune["settings"]["tokenizers"]
        lines += ["", "| GUE task | " + " | ".join(f"{n} MCC" for n in names) + " | random − learned |",
                  "|---|" + "---|" * (len(names) + 1)]
        for task, row in finetune["tasks"].items():
            lines.append(f"| {task} | " + " | ".join(format_mcc(row.get(n)) for n in names)
                         + f" | {_num(row.get('random_minus_learned'))} |")
    return "\n".join(lines) + "\n"


def report(args: argparse.Namespace) -> str:
    record = {"settings": {**eval_settings(args), "held_out_species": args.held_out_species,
                           "valid_samples_in_corpus": args.valid_samples, "random_seeds": args.random_seeds,
                           "eval_compression": read_portable_config(args.model)["model_config"].get(
                               "eval_compression")},
              **eval_report(args)}
    finetune = finetune_report(args) if args.finetune_tasks else None
    if finetune:
        record["finetune"] = finetune
    md = markdown({k: record[k] for k in args.tokenizers if k in record}, finetune)
    for name, text in (("ablation.json", json.dumps(record, indent=1) + "\n"), ("ablation.md", md)):
        (args.out / f"{name}.tmp").write_text(text)
        (args.out / f"{name}.tmp").replace(args.out / name)
    return md


# ------------------------------------------------------------------------------- CLI
def _list(text: str, choices: Iterable[str] | None, flag: str, p: argparse.ArgumentParser) -> list[str]:
    items = [t for t in text.split(",") if t]
    if choices is not None and (unknown := [t for t in items if t not in choices]):
        p.error(f"{flag}: unknown {', '.join(unknown)}; known: {', '.join(choices)}")
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True,
                   help="portable MergeDNA directory with its decoders (tools/convert_checkpoint.py)")
    p.add_argument("--data", type=Path, required=True,
                   help="prepared corpus (data_prep/prepare.py); its valid split is the held-out species")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--tokenizers", default=",".join(MERGE_DECISIONS),
                   help=f"merge decisions to evaluate, comma-separated, among {','.join(EVAL_TOKENIZERS)} "
                        f"(default {','.join(MERGE_DECISIONS)})")
    p.add_argument("--random-seeds", type=int, default=3,
                   help="random merges: global-RNG seeds 0..K-1, each evaluated (default 3)")
    p.add_argument("--max-valid-samples", type=int, default=None,
                   help="score at most the first N valid samples (default: the whole valid split)")
    p.add_argument("--seq-length", type=int, default=None, help="bases per sample (default: the corpus's)")
    p.add_argument("--micro-batch-size", type=int, default=4,
                   help="samples per forward pass (default 4, benchmarks/pretrain_real_genomes.py's "
                        "validation; the loss means are per micro-batch, weighted by its samples)")
    p.add_argument("--seed", type=int, default=1234,
                   help="the run seed that keys the objective's draws (AMTM masks; default 1234, train.py's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g = p.add_argument_group("fine-tuning (tools/finetune.py, LoRA, a fixed budget)")
    g.add_argument("--finetune-tasks", default="",
                   help=f"GUE tasks under --gue, comma-separated, e.g. {','.join(GUE_TASKS)} (default: none)")
    g.add_argument("--finetune-seeds", default="0,1,2",
                   help="fine-tuning seeds, comma-separated (default 0,1,2)")
    g.add_argument("--finetune-tokenizers", default=",".join(FINETUNE_TOKENIZERS),
                   help="merge decisions to fine-tune with (default learned,random)")
    g.add_argument("--gue", type=Path, default=GUE, help=f"GUE root (default {GUE})")
    add_finetune_budget_flags(g)
    p.add_argument("--report-only", action="store_true",
                   help="run nothing; write the report from what exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    for name in ("model", "data", "out", "gue"):
        setattr(args, name, getattr(args, name).resolve())
    args.tokenizers = _list(args.tokenizers, EVAL_TOKENIZERS, "--tokenizers", p)
    args.finetune_tokenizers = _list(args.finetune_tokenizers, MERGE_DECISIONS, "--finetune-tokenizers", p)
    args.finetune_tasks = _list(args.finetune_tasks, None, "--finetune-tasks", p)
    try:
        args.finetune_seeds = [int(s) for s in _list(args.finetune_seeds, None, "--finetune-seeds", p)]
    except ValueError:
        p.error(f"--finetune-seeds {args.finetune_seeds!r}: integers, comma-separated")
    if args.random_seeds < 1 or args.micro_batch_size < 1 or not args.finetune_seeds:
        p.error("--random-seeds, --micro-batch-size and --finetune-seeds need at least 1")
    if args.max_valid_samples is not None and args.max_valid_samples < 1:
        p.error("--max-valid-samples must be >= 1")
    return args


def check_inputs(args: argparse.Namespace) -> None:
    """A MergeDNA with decoders and a corpus; fills in the corpus's seq_length, held-out species and size."""
    try:
        config = read_portable_config(args.model)
        manifest = load_manifest(args.data)
    except (FileNotFoundError, ValueError) as e:
        raise TokenizerAblationError(str(e)) from None
    if config["family"] != "mergedna" or config.get("encoder_only"):
        what = "an encoder-only one" if config.get("encoder_only") else config["family"]
        raise TokenizerAblationError(f"{args.model}: need a MergeDNA with its decoders (the objective runs "
                                     f"all of them), not {what}")
    parameters = manifest["parameters"]
    args.seq_length = args.seq_length or int(parameters["seq_len"])
    args.held_out_species = parameters.get("valid_species") or f"valid_frac {parameters.get('valid_frac')}"
    args.valid_samples = int(manifest.get("splits", {}).get("valid", {}).get("samples", sys.maxsize))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_inputs(args)
        args.out.mkdir(parents=True, exist_ok=True)
        if not args.report_only:
            if args.finetune_tasks:
                require_nice()
            evaluate_stage(args)
            if args.finetune_tasks:
                finetune_stage(args)
        print(report(args))
    except AblationError as e:
        print(f"tokenizer_ablation.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
