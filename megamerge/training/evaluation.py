"""Validation: the fixed validation micro-batches through the model without gradients, summed
over data-parallel ranks into per-sample loss means, the accuracy on the scored bases and the
perplexity per scored base.

`validation_sums` and `validation_result` are the protocol's two halves (one rank's sums; the
numbers from the summed totals), so a tool that evaluates outside training
(benchmarks/tokenizer_ablation.py) scores exactly as train.py does."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable

import torch

from megamerge.models.common.batch import Batch
from megamerge.models.common.keyed_random import sample_seeds
from megamerge.models.model_spec import ModelSpec
from megamerge.training.batches import ValidBatches
from megamerge.training.distributed import all_reduce_sum


def sum_keys(spec: ModelSpec) -> list[str]:
    return [*spec.loss_keys, "samples", "correct", "scored", "nats"]


@torch.no_grad()
def validation_sums(forward: Callable[[Batch], dict], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    seed: int, device: torch.device, spec: ModelSpec) -> dict[str, float]:
    """One rank's sums over `batches` of (input_ids [b, N], global sample indices [b]): each loss
    weighted by its micro-batch's samples, the samples, the correct and scored bases, and the nats
    on the scored bases. Every random draw is keyed by (seed, sample index)."""
    sums = defaultdict(float)
    for ids, index in batches:
        out = forward(Batch(ids, sample_seeds(seed, index)).to(device))
        n = float(ids.shape[0])
        for key in spec.loss_keys:
            sums[key] += float(out[key]) * n
        sums["samples"] += n
        sums["correct"] += float(out[spec.eval_correct])
        sums["scored"] += float(out[spec.eval_count])
        sums["nats"] += float(out[spec.eval_loss]) * float(out[spec.eval_count])
    return {key: sums[key] for key in sum_keys(spec)}


def validation_result(totals: dict[str, float], spec: ModelSpec) -> dict | None:
    """The logged numbers from the sums over every rank; None when no sample was scored."""
    if totals["samples"] == 0:
        return None
    result = {key: totals[key] / totals["samples"] for key in spec.loss_keys}
    result[spec.eval_accuracy_name] = totals["correct"] / max(totals["scored"], 1.0)
    # Perplexity per scored base (MergeDNA: the masked bases; CARMANIA: every next base).
    result["perplexity"] = math.exp(totals["nats"] / max(totals["scored"], 1.0))
    return result


@torch.no_grad()
def evaluate(engine, forward: Callable[[Batch], dict], valid: ValidBatches, seed: int,
             device: torch.device, spec: ModelSpec) -> dict | None:
    """`forward(batch)` -> compute_losses' dict (BuiltEngine.eval_forward). None when
    there is no validation data."""
    if not valid.available:
        return None
    engine.eval()
    sums = validation_sums(forward, valid, seed, device, spec)
    engine.train()
    keys = sum_keys(spec)
    totals = dict(zip(keys, all_reduce_sum([sums[k] for k in keys], device)))
    return validation_result(totals, spec)
