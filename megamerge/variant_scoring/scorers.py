"""The scores of a batch of variant windows, per model family, computed with the models' own forward
functions (MergeDNA's `encode` and `forward`, CARMANIA's `hidden_states` and head).

MergeDNA, a masked model: the masked marginal log p(ALT) - log p(REF) at the variant base, with the
variant's token masked as AMTM (pass 3 of MergeDNA.compute_losses) masks. The mask: the REF window is
tokenised by the Local Encoder in eval mode (the fixed eval compression, so deterministic), the
token holding the variant base is found in its base -> token map, and every base of that token is
replaced by MASK (objective.mask_bases). The masked window then runs through the whole network,
Local Encoder to Local Decoder, as pass 3 does (in eval, `forward` is exactly that pass: the token
target depends on the window's length only), and the score is read from the log-softmax over the
four bases at the variant position. SNVs only: an indel or a multi-base substitution has no single
masked base to compare.

CARMANIA, a causal model: the log-likelihood ratio log p(ALT window) - log p(REF window), each the sum
of the next-base log-probabilities of every base after the first (N is never predicted, so an N adds
no term). Indels are scored: the two windows cover the same reference span (windows.py), so the ALT
window has len(ALT) - len(REF) more terms. That is the length effect: an insertion of k bases adds k
terms (about -1.39 k nats for a model at chance, less negative where the model predicts the inserted
bases well) and a deletion removes them, so compare indels with indels of the same length, not with
SNVs.

Both: the embedding distance, 1 - cosine similarity of the REF and ALT windows' mean embeddings:
MergeDNA's Latent Encoder token states (eval compression) averaged over tokens, CARMANIA's final
hidden states averaged over bases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from megamerge.models.mergedna.objective import mask_bases
from megamerge.variant_scoring.variants import Variant
from megamerge.variant_scoring.windows import WindowPair
from megamerge.vocabulary import BASES, IGNORE_INDEX, PAD, base_targets


@dataclass(frozen=True)
class Score:
    name: str  # the output column and, prefixed, the VCF INFO field
    description: str
    higher_means_damaging: bool  # the direction AUROC and AUPRC read it in (--labels: 1 = damaging)


MASKED_MARGINAL = Score("masked_marginal", "MergeDNA masked marginal log p(ALT) - log p(REF) at the variant "
                        "base, its token masked as AMTM masks", higher_means_damaging=False)
LLR = Score("llr", "CARMANIA log-likelihood ratio of the ALT and REF windows (sums of next-base "
            "log-probabilities over the same reference span)", higher_means_damaging=False)
EMBEDDING_DISTANCE = Score("embedding_distance", "1 - cosine similarity of the REF and ALT windows' mean "
                           "embeddings", higher_means_damaging=True)


@dataclass(frozen=True)
class Scorer:
    family: str
    scores: tuple[Score, ...]
    unscorable: Callable[[Variant], str | None]  # why this family cannot score a variant, or None
    score_pairs: Callable[[nn.Module, list[WindowPair]], torch.Tensor]  # windows [P] -> scores [P, S]


def right_padded(windows: list[torch.Tensor]) -> torch.Tensor:
    """Windows of ids [n_i] -> [P, max n_i] long, PAD as the right suffix the models mask."""
    ids = torch.full((len(windows), max(len(w) for w in windows)), PAD, dtype=torch.long)
    for row, window in enumerate(windows):
        ids[row, :len(window)] = window
    return ids


def mean_over(states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """states [P, T, D], valid [P, T] bool -> the mean of each row's valid states [P, D] in float32."""
    weights = valid.float()[..., None]
    return (states.float() * weights).sum(1) / weights.sum(1)


def cosine_distance(ref: torch.Tensor, alt: torch.Tensor) -> torch.Tensor:
    return 1 - F.cosine_similarity(ref, alt, dim=-1)


def not_an_snv(variant: Variant) -> str | None:
    if len(variant.ref) != 1 or len(variant.alt) != 1:
        return "not a single-base substitution (MergeDNA's masked marginal scores SNVs only)"
    if variant.ref.upper() not in BASES:
        return "REF is N (the model predicts A, C, G, T only)"
    return None


@torch.no_grad()
def mergedna_scores(model: nn.Module, pairs: list[WindowPair]) -> torch.Tensor:
    """[P, 2]: masked marginal and embedding distance of each SNV's windows."""
    device = next(model.parameters()).device
    P = len(pairs)
    ids = right_padded([p.ref for p in pairs] + [p.alt for p in pairs]).to(device)  # [2P, N]: REF rows first
    hidden, assign, token_valid = model.encode(ids)  # [2P, L, D], [2P, N], [2P, L]
    means = mean_over(hidden, token_valid)  # [2P, D]
    rows = torch.arange(P, device=device)
    offsets = torch.tensor([p.offset for p in pairs], device=device)  # [P]
    ref_ids = ids[:P]  # [P, N]
    variant_token = assign[rows, offsets]  # [P]: the REF window's token holding the variant base
    token_bases = (assign[:P] == variant_token[:, None]) & (ref_ids != PAD)  # [P, N]
    logits = model(mask_bases(ref_ids, token_bases))  # [P, N, 4]
    log_probs = logits[rows, offsets].float().log_softmax(-1)  # [P, 4]
    alt_bases = ids[P + rows, offsets]  # [P]
    marginal = log_probs[rows, alt_bases] - log_probs[rows, ref_ids[rows, offsets]]
    return torch.stack([marginal, cosine_distance(means[:P], means[P:])], 1).cpu()


@torch.no_grad()
def carmania_scores(model: nn.Module, pairs: list[WindowPair]) -> torch.Tensor:
    """[P, 2]: log-likelihood ratio and embedding distance of each variant's windows."""
    device = next(model.parameters()).device
    P = len(pairs)
    ids = right_padded([p.ref for p in pairs] + [p.alt for p in pairs]).to(device)  # [2P, N]: REF rows first
    states = model.hidden_states(ids)  # [2P, N, D]
    logits = model.output(states[:, :-1]).float()  # [2P, N-1, 4]: position t predicts base t+1
    targets = base_targets(ids[:, 1:])  # [2P, N-1]: IGNORE_INDEX at N and PAD, which add no term
    # summed in float64: a window holds thousands of terms, and the LLR is a small difference of two sums
    log_likelihood = -F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                      reduction="none").double().sum(1)  # [2P]
    means = mean_over(states, ids != PAD)  # [2P, D]
    llr = log_likelihood[P:] - log_likelihood[:P]
    return torch.stack([llr, cosine_distance(means[:P], means[P:]).double()], 1).cpu()


SCORERS = {
    "mergedna": Scorer("mergedna", (MASKED_MARGINAL, EMBEDDING_DISTANCE), not_an_snv, mergedna_scores),
    "carmania": Scorer("carmania", (LLR, EMBEDDING_DISTANCE), lambda variant: None, carmania_scores),
}
