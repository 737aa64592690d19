"""The supervised loop and the evaluation protocol: train for E epochs, score dev after each, keep the
weights of the best dev epoch (the first, on a tie), restore them and score test exactly once.
Test never influences any choice.

Optimiser: AdamW (weight decay 0.01) at a constant learning rate on the trainable parameters,
gradient norm clipped to 1. Losses: cross-entropy (classification; per-base over the labelled bases),
mean squared error on standardised targets (regression; predictions are mapped back before metrics).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from megamerge.finetune.data_parallel import DataParallel
from megamerge.finetune.heads import TaskModel
from megamerge.finetune.metrics import HEADLINE, compute_metrics, selection_score
from megamerge.finetune.task_data import TaskData, TaskSplit, collate, eval_batches, length_bucketed_batches
from megamerge.vocabulary import IGNORE_INDEX


@dataclass
class LoopSettings:
    lr: float
    epochs: int = 5
    batch_size: int = 32
    eval_batch_size: int = 64
    weight_decay: float = 0.01
    clip_grad: float = 1.0
    max_steps: int | None = None
    label_mean: float = 0.0  # regression targets are standardised with train's mean and std
    label_std: float = 1.0
    progress: bool = True


@dataclass
class SeedOutcome:
    best_epoch: int
    epochs_run: int
    steps: int
    dev: dict
    test: dict
    dev_history: list[dict]
    train_sequences: int
    train_seconds: float
    test_outputs: list[np.ndarray]  # the head's outputs on test, file order (per-base: [n_i, C] each)


def batch_loss(outputs: torch.Tensor, labels: torch.Tensor, task_type: str,
               settings: LoopSettings) -> torch.Tensor:
    """The summed (not averaged) loss of a shard; the caller divides by the global count."""
    if task_type == "regression":
        target = (labels.to(outputs.dtype) - settings.label_mean) / settings.label_std
        return F.mse_loss(outputs, target, reduction="sum")
    if task_type == "per_base":
        return F.cross_entropy(outputs.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                               reduction="sum")
    return F.cross_entropy(outputs, labels, reduction="sum")


def train_step(model: TaskModel, optimizer: torch.optim.Optimizer, params: list, split: TaskSplit,
               global_batch: np.ndarray, dp: DataParallel, settings: LoopSettings) -> float:
    """One optimiser step on a global batch, this rank running its shard -> the global mean loss."""
    task_type = model.task_type
    if task_type == "per_base":
        count = sum(int((split.labels[i] != IGNORE_INDEX).sum()) for i in global_batch)
    else:
        count = len(global_batch)
    optimizer.zero_grad(set_to_none=True)
    local = dp.shard(global_batch)
    loss_sum = torch.zeros(1, device=dp.device)
    if len(local):
        ids, labels = collate(split, local, task_type)
        loss = batch_loss(model(ids.to(dp.device)), labels.to(dp.device), task_type, settings)
        (loss / max(count, 1)).backward()
        loss_sum = loss.detach().reshape(1)
    loss_sum = dp.sum_gradients(params, loss_sum)
    if settings.clip_grad:
        torch.nn.utils.clip_grad_norm_(params, settings.clip_grad)
    optimizer.step()
    return float(loss_sum) / max(count, 1)


@torch.no_grad()
def predict_split(model: TaskModel, split: TaskSplit, dp: DataParallel,
                  settings: LoopSettings) -> list[np.ndarray]:
    """The head's outputs for every row of split, in file order (regression in label units). The
    fixed eval batches are dealt to ranks round-robin, so outputs do not depend on the world size."""
    was_training = model.training
    model.eval()
    batches = eval_batches(split.lengths, settings.eval_batch_size)
    mine = []
    for index in batches[dp.rank::dp.world_size]:
        ids, _ = collate(split, index, model.task_type)
        out = model(ids.to(dp.device)).float().cpu().numpy()
        if model.task_type == "regression":
            out = out * settings.label_std + settings.label_mean
        for row, i in enumerate(index):
            value = out[row, :split.lengths[i]] if model.task_type == "per_base" else out[row]
            mine.append((int(i), value))
    model.train(was_training)
    outputs: list = [None] * len(split)
    for i, value in dp.gather(mine):
        outputs[i] = value
    return outputs


def split_metrics(task_type: str, split: TaskSplit, outputs: list[np.ndarray]) -> dict[str, float]:
    if task_type == "per_base":
        flat_out = np.concatenate(outputs)  # [sum n_i, C]
        flat_labels = np.concatenate(split.labels)
        keep = flat_labels != IGNORE_INDEX
        return compute_metrics(task_type, flat_out[keep], flat_labels[keep])
    return compute_metrics(task_type, np.stack(outputs), np.asarray(split.labels))


def evaluate_split(model: TaskModel, data: TaskData, split_name: str, dp: DataParallel,
                   settings: LoopSettings) -> tuple[dict[str, float], list[np.ndarray]]:
    """(metrics, outputs) of one split. The loop calls it once per epoch for dev and once in all for test."""
    split = data.split(split_name)
    outputs = predict_split(model, split, dp, settings)
    return split_metrics(data.task_type, split, outputs), outputs


def trainable_state(model: TaskModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def restore_state(model: TaskModel, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def run_seed(model: TaskModel, data: TaskData, seed: int, dp: DataParallel, settings: LoopSettings,
             writer=None) -> SeedOutcome:
    """Train, select the epoch on dev, restore it, score test once."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    rng = np.random.default_rng(seed)
    headline = HEADLINE[data.task_type]
    best_score, best_epoch, best_state = -np.inf, 0, trainable_state(model)
    history, steps, sequences, seconds = [], 0, 0, 0.0
    epoch = 0
    for epoch in range(1, settings.epochs + 1):
        batches = length_bucketed_batches(data.train.lengths, settings.batch_size, rng)
        if settings.max_steps is not None:
            batches = batches[:max(0, settings.max_steps - steps)]
        model.train()
        start, losses = time.perf_counter(), []
        with tqdm(batches, desc=f"seed {seed} epoch {epoch}/{settings.epochs}", unit="batch",
                  disable=not (settings.progress and dp.is_main), dynamic_ncols=True) as bar:
            for global_batch in bar:
                loss = train_step(model, optimizer, params, data.train, global_batch, dp, settings)
                steps += 1
                sequences += len(global_batch)
                losses.append(loss)
                bar.set_postfix(loss=f"{loss:.4f}")
                if writer is not None:
                    writer.add_scalar("train/loss", loss, steps)
        seconds += time.perf_counter() - start
        dev, _ = evaluate_split(model, data, "dev", dp, settings)
        history.append({"epoch": epoch, "step": steps,
                        "train_loss": float(np.mean(losses)) if losses else None, **dev})
        if writer is not None:
            for name, value in dev.items():
                writer.add_scalar(f"dev/{name}", value, epoch)
        if selection_score(dev, data.task_type) > best_score:
            best_score, best_epoch, best_state = (selection_score(dev, data.task_type), epoch,
                                                  trainable_state(model))
        if dp.is_main and settings.progress:
            tqdm.write(f"seed {seed} epoch {epoch}: dev {headline} {dev[headline]:.4f} "
                       f"(best epoch {best_epoch})")
        if settings.max_steps is not None and steps >= settings.max_steps:
            break
    if best_epoch == 0:  # every dev score was NaN: keep the last epoch rather than the untrained head
        best_epoch, best_state = epoch, trainable_state(model)
    restore_state(model, best_state)
    test, test_outputs = evaluate_split(model, data, "test", dp, settings)
    if writer is not None:
        for name, value in test.items():
            writer.add_scalar(f"test/{name}", value, best_epoch)
    best_dev = {k: v for k, v in history[best_epoch - 1].items() if k not in ("epoch", "step", "train_loss")}
    return SeedOutcome(best_epoch, epoch, steps, best_dev, test, history, sequences, seconds, test_outputs)
