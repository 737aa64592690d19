"""What the trainer needs to know about each model family: which losses to log, how evaluation
scores it, and its FLOPs for MFU. Everything else (data, DeepSpeed, checkpoints) is shared."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from megamerge.models.carmania.model import training_flops_per_sequence
from megamerge.models.mergedna.flops import mergedna_step_flops


@dataclass(frozen=True)
class TrainingSpec:
    loss_keys: tuple[str, ...]  # scalar losses in compute_losses' dict, averaged and logged
    ratio_keys: tuple[str, ...]  # python floats averaged and logged (MergeDNA's compression)
    eval_correct: str  # compute_losses key: correct predictions among the scored bases
    eval_count: str  # compute_losses key: number of scored bases
    eval_loss: str  # the cross-entropy over those bases, for perplexity
    eval_accuracy_name: str  # how the eval line names the accuracy
    flops_per_sequence: Callable[[object, int, dict], float]  # (cfg, n bases, logged means) -> FLOPs


def _mergedna_flops(cfg, n: int, means: dict) -> float:
    return mergedna_step_flops(cfg, n, n / means["bases_per_token"], n / means["latent_bases_per_token"])


SPECS = {
    "mergedna": TrainingSpec(
        loss_keys=("loss", "mtr", "latent_mtr", "amtm"),
        ratio_keys=("bases_per_token", "latent_bases_per_token"),
        eval_correct="masked_correct", eval_count="masked_count", eval_loss="amtm",
        eval_accuracy_name="masked_base_accuracy", flops_per_sequence=_mergedna_flops,
    ),
    "carmania": TrainingSpec(
        loss_keys=("loss", "nt", "tm"),
        ratio_keys=(),
        eval_correct="next_base_correct", eval_count="next_base_count", eval_loss="nt",
        eval_accuracy_name="next_base_accuracy",
        flops_per_sequence=lambda cfg, n, means: training_flops_per_sequence(cfg, n),
    ),
}
