"""CARMANIA's transition-matrix (TM) loss (arXiv 2507.09378): KL(p || q) between first-order 4x4
base-transition matrices.

    p[i, j] = #(base i followed by base j in the sequence), normalised by row
    q[i, j] = sum_t P_t[i] * P_{t+1}[j] over the model's predicted distributions, normalised by row

where P_t is the model's distribution over A, C, G, T for base t. A pair (t, t+1) counts, in p
and in q alike, only when both bases are A/C/G/T, so N runs and padding break the chain and the
two matrices always cover the same pairs. With one-hot P_t, q is exactly p (the paper's
Appendix B check).

Alignment is the one thing the two callers differ in:
  * MergeDNA's reconstruction logits [B, N, 4] describe base t at position t  (next_token=False);
  * CARMANIA's next-token logits at position t describe base t + 1              (next_token=True),
    so base 0 has no prediction and only the pairs (1, 2), ..., (N-2, N-1) are scored.
"""

from __future__ import annotations

import torch

from megamerge.vocabulary import NUM_BASE_CLASSES

# Floor for q inside the log: a predicted transition with (numerically) zero mass costs a large
# but finite penalty instead of inf. Irrelevant wherever p is zero, which contributes exactly 0.
Q_FLOOR = 1e-12


def transition_pair_mask(input_ids: torch.Tensor) -> torch.Tensor:
    """input_ids [B, N] -> [B, N-1] bool: pair (t, t+1) is two A/C/G/T bases (no N, PAD, MASK)."""
    is_base = (input_ids >= 0) & (input_ids < NUM_BASE_CLASSES)
    return is_base[:, :-1] & is_base[:, 1:]


def empirical_transition_counts(input_ids: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Bigram counts [B, 4, 4] of the pairs selected by `pairs` [B, N-1]."""
    B = input_ids.shape[0]
    ids = input_ids.clamp(0, NUM_BASE_CLASSES - 1).long()  # non-bases are masked out below
    flat = ids[:, :-1] * NUM_BASE_CLASSES + ids[:, 1:]  # [B, N-1] index of (from, to)
    counts = torch.zeros(B, NUM_BASE_CLASSES**2, dtype=torch.float32, device=input_ids.device)
    counts.scatter_add_(1, flat, pairs.float())
    return counts.view(B, NUM_BASE_CLASSES, NUM_BASE_CLASSES)


def predicted_transition_counts(probs: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """sum_t P_t P_{t+1}^T over the selected pairs: probs [B, N, 4], pairs [B, N-1] -> [B, 4, 4]."""
    probs = probs.float()
    return torch.einsum("bti,btj->bij", probs[:, :-1] * pairs[..., None].float(), probs[:, 1:])


def row_normalise(counts: torch.Tensor) -> torch.Tensor:
    """Rows summing to 1; a row with no observations stays all-zero (never 0/0)."""
    return counts / counts.sum(-1, keepdim=True).clamp_min(torch.finfo(counts.dtype).tiny)


def transition_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """sum_ij p_ij log(p_ij / q_ij) per sequence: p, q [B, 4, 4] row-normalised -> [B].

    Entries with p_ij = 0 contribute exactly 0 (and no gradient), so empty rows of p are free."""
    observed = p > 0
    log_ratio = torch.log(p.clamp_min(Q_FLOOR)) - torch.log(q.clamp_min(Q_FLOOR))
    return torch.where(observed, p * log_ratio, torch.zeros_like(p)).sum((-1, -2))


def transition_matrix_loss(
    logits: torch.Tensor,  # [B, N, 4] over A, C, G, T
    input_ids: torch.Tensor,  # [B, N]
    next_token: bool = False,
) -> torch.Tensor:
    """KL(p || q) averaged over the sequences that have at least one A/C/G/T pair.

    next_token=False: logits[:, t] is the prediction of base t (MergeDNA reconstruction).
    next_token=True:  logits[:, t] is the prediction of base t + 1 (CARMANIA, causal LM).
    A batch without any scorable pair (all-N) gives an exact 0 that still carries the graph.
    """
    if logits.shape[-1] != NUM_BASE_CLASSES:
        raise ValueError(f"logits must have {NUM_BASE_CLASSES} classes (A, C, G, T), got {logits.shape[-1]}")
    if logits.shape[:2] != input_ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match input_ids {tuple(input_ids.shape)}")
    if next_token:  # re-align so that position t of both tensors describes the same base
        logits, input_ids = logits[:, :-1], input_ids[:, 1:]
    if input_ids.shape[1] < 2:
        return logits.sum() * 0.0
    pairs = transition_pair_mask(input_ids)  # [B, N'-1]
    probs = torch.softmax(logits.float(), dim=-1)  # [B, N', 4]
    p = row_normalise(empirical_transition_counts(input_ids, pairs))
    q = row_normalise(predicted_transition_counts(probs, pairs))
    kl = transition_kl(p, q)  # [B]
    scored = pairs.any(1)
    return (kl * scored).sum() / scored.sum().clamp_min(1)
