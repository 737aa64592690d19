"""One fine-tuning run over several seeds: what tools/finetune.py does after parsing its flags.

Everything that can be wrong with the input (task files, flags, the model directory) fails before
the first training step. Only rank 0 writes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from megamerge import __version__
from megamerge.finetune.adapters import METHODS, check_targets
from megamerge.finetune.build import build_task_model
from megamerge.finetune.data_parallel import DataParallel
from megamerge.finetune.heads import bare_model
from megamerge.finetune.loop import LoopSettings, run_seed
from megamerge.finetune.metrics import HEADLINE
from megamerge.finetune.results import mean_std, save_seed_run, seed_dir, write_results
from megamerge.finetune.task_data import TaskData, load_task
from megamerge.portable import read_portable_config

DEFAULT_LR = {"lora": 1e-4, "full": 5e-5, "probe": 1e-3}


def parse_seeds(text: str) -> list[int]:
    """'3' -> [0, 1, 2]; '0,1,2' or '7,' -> exactly those seeds."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give a count (3) or a comma-separated list (0,1,2)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds {text!r}: need at least one seed, no repeats, none negative")
    return seeds


def check_options(o: argparse.Namespace) -> None:
    if o.method not in METHODS:
        raise ValueError(f"--method {o.method!r}: choose one of {METHODS}")
    for flag, value in (("--epochs", o.epochs), ("--batch-size", o.batch_size), ("--lora-rank", o.lora_rank)):
        if value < 1:
            raise ValueError(f"{flag} {value} must be >= 1")
    for flag, value in (("--max-steps", o.max_steps), ("--max-train-samples", o.max_train_samples)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value} must be >= 1")
    if o.lr is not None and not o.lr > 0:
        raise ValueError(f"--lr {o.lr} must be > 0")
    check_targets(o.target_modules)


def make_spec(o: argparse.Namespace, data: TaskData, family: str, seed: int) -> dict:
    labels = np.asarray(data.train.labels, dtype=np.float64) if data.task_type == "regression" else None
    return {
        "model": str(Path(o.model).resolve()), "family": family, "method": o.method,
        "task": data.name, "task_dir": str(Path(o.task).resolve()), "task_type": data.task_type,
        "num_outputs": data.num_outputs, "classes": data.classes, "pooling": o.pooling,
        "from_scratch": o.from_scratch, "seed": seed, "eval_compression": o.eval_compression,
        "merge_decisions": o.merge_decisions,
        "lora_rank": o.lora_rank, "lora_alpha": o.lora_alpha, "target_modules": list(o.target_modules),
        "adapt_tokenizer": o.adapt_tokenizer, "sequence_column": o.sequence_column,
        "label_column": o.label_column,
        "label_mean": float(labels.mean()) if labels is not None else 0.0,
        "label_std": (float(labels.std()) or 1.0) if labels is not None else 1.0,
    }


def count_parameters(model) -> dict[str, int]:
    backbone = sum(p.numel() for n, p in bare_model(model.backbone).named_parameters() if "lora_" not in n)
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad), "backbone": backbone}


def merge_decisions_of(model) -> str | None:
    """The merge decisions the backbone's Local Encoder ran with (None: CARMANIA does not merge)."""
    return getattr(bare_model(model.backbone).cfg, "merge_decisions", None)


class FinetuneInputError(ValueError):
    """Bad flags, task files or model directory, found before any training."""


def prepare(o: argparse.Namespace):
    """Check everything and build the first seed's model -> (seeds, family, data, first model)."""
    try:
        check_options(o)
        seeds = parse_seeds(o.seeds)
        family = read_portable_config(o.model)["family"]
        data = load_task(o.task, o.task_type, o.sequence_column, o.label_column, o.max_train_samples)
        first = build_task_model(make_spec(o, data, family, seeds[0]))
    except (ValueError, FileNotFoundError) as e:  # TaskDataError is a ValueError
        raise FinetuneInputError(str(e)) from None
    return seeds, family, data, first


def run(o: argparse.Namespace) -> dict:
    """Fine-tune and evaluate every seed; write OUT (rank 0); return the results record."""
    wall_start = time.perf_counter()
    seeds, family, data, first = prepare(o)
    dp = DataParallel.from_env()
    lr = o.lr if o.lr is not None else DEFAULT_LR[o.method]
    out = Path(o.out)
    per_seed, parameters, decisions = [], None, None
    for seed in seeds:
        spec = make_spec(o, data, family, seed)
        model = (first if seed == seeds[0] else build_task_model(spec)).to(dp.device)
        parameters = count_parameters(model)
        decisions = merge_decisions_of(model)
        settings = LoopSettings(lr=lr, epochs=o.epochs, batch_size=o.batch_size,
                                eval_batch_size=o.eval_batch_size, weight_decay=o.weight_decay,
                                max_steps=o.max_steps, label_mean=spec["label_mean"],
                                label_std=spec["label_std"], progress=not o.no_progress)
        writer = None
        if dp.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard" / f"seed{seed}"))
        outcome = run_seed(model, data, seed, dp, settings, writer)
        if writer is not None:
            writer.close()
        per_seed.append({
            "seed": seed, "best_epoch": outcome.best_epoch, "epochs_run": outcome.epochs_run,
            "steps": outcome.steps, "dev": outcome.dev, "test": outcome.test,
            "dev_history": outcome.dev_history, "train_seconds": outcome.train_seconds,
            "train_sequences": outcome.train_sequences,
            "train_sequences_per_s": outcome.train_sequences / max(outcome.train_seconds, 1e-9),
        })
        if dp.is_main:
            save_seed_run(model, spec, seed_dir(out, seed), outcome.test_outputs)
        dp.barrier()
        first = model = None  # free this seed's model before building the next
    metric = HEADLINE[data.task_type]
    test_mean, test_std = mean_std([s["test"][metric] for s in per_seed])
    dev_mean, dev_std = mean_std([s["dev"][metric] for s in per_seed])
    train_seconds = sum(s["train_seconds"] for s in per_seed)
    record = {
        "task": data.name, "task_dir": str(Path(o.task).resolve()), "model": str(Path(o.model).resolve()),
        "family": family, "method": o.method, "from_scratch": o.from_scratch, "task_type": data.task_type,
        "classes": data.classes, "metric": metric, "test_mean": test_mean, "test_std": test_std,
        "dev_mean": dev_mean, "dev_std": dev_std, "per_seed": per_seed,
        "settings": {"lr": lr, "epochs": o.epochs, "batch_size": o.batch_size, "max_steps": o.max_steps,
                     "weight_decay": o.weight_decay, "pooling": o.pooling, "lora_rank": o.lora_rank,
                     "lora_alpha": o.lora_alpha, "target_modules": list(o.target_modules),
                     "adapt_tokenizer": o.adapt_tokenizer, "eval_compression": o.eval_compression,
                     "max_train_samples": o.max_train_samples, "seeds": seeds,
                     "merge_decisions": decisions},
        "n_train": len(data.train), "n_dev": len(data.dev), "n_test": len(data.test),
        "trainable_parameters": parameters["trainable"], "backbone_parameters": parameters["backbone"],
        "world_size": dp.world_size,
        "train_sequences_per_s": sum(s["train_sequences"] for s in per_seed) / max(train_seconds, 1e-9),
        "wall_time_s": time.perf_counter() - wall_start,
        "megamerge_version": __version__,
    }
    if dp.is_main:
        write_results(out, record)
    dp.close()
    return record
