"""Validation: the fixed validation micro-batches through the model without gradients, summed
over data-parallel ranks into per-sample loss means, the accuracy on the scored bases and the
perplexity per scored base."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import torch

from megamerge.models.common.batch import Batch
from megamerge.models.common.keyed_random import sample_seeds
from megamerge.models.model_spec import ModelSpec
from megamerge.training.batches import ValidBatches
from megamerge.training.distributed import all_reduce_sum


@torch.no_grad()
def evaluate(engine, forward: Callable[[Batch], dict], valid: ValidBatches, seed: int,
             device: torch.device, spec: ModelSpec) -> dict | None:
    """`forward(batch)` -> compute_losses' dict (BuiltEngine.eval_forward). None when
    there is no validation data."""
    if not valid.available:
        return None
    engine.eval()
    sums = defaultdict(float)
    for ids, index in valid:
        out = forward(Batch(ids, sample_seeds(seed, index)).to(device))
        n = float(ids.shape[0])
        for key in spec.loss_keys:
            sums[key] += float(out[key]) * n
        sums["samples"] += n
        sums["correct"] += float(out[spec.eval_correct])
        sums["scored"] += float(out[spec.eval_count])
        sums["nats"] += float(out[spec.eval_loss]) * float(out[spec.eval_count])
    engine.train()
    keys = [*spec.loss_keys, "samples", "correct", "scored", "nats"]
    totals = dict(zip(keys, all_reduce_sum([sums[k] for k in keys], device)))
    if totals["samples"] == 0:
        return None
    result = {key: totals[key] / totals["samples"] for key in spec.loss_keys}
    result[spec.eval_accuracy_name] = totals["correct"] / max(totals["scored"], 1.0)
    # Perplexity per scored base (MergeDNA: the masked bases; CARMANIA: every next base).
    result["perplexity"] = math.exp(totals["nats"] / max(totals["scored"], 1.0))
    return result
