"""MergeDNA's three-pass pre-training objective, in the pieces that both `MergeDNA.compute_losses`
(the whole model in one process) and the pipeline stages (megamerge/models/mergedna/pipeline.py, the
model cut across processes) call, so a change to a draw, a merge rule or a loss is made once:

    token_targets        how many tokens L_b the Local Encoder merges each sample to
    merge_latent         one of pass 2's global merges of the frozen tokens, down to K_b = latent_token_count
                         after the last (cfg.latent_merge_points: after every latent block, or one burst)
    latent_key_bias      pass 2's size-proportional attention after a merge (log group size)
    unmerge_latent       pass 2's K groups back to the L tokens (on the frozen tokens' frame)
    amtm_base_mask       pass 3's masked bases, drawn from pass 2's latent groups
    mask_bases           the masked input of pass 3
    objective_outputs    the three per-pass cross-entropies, their weighted sum and the metrics

L = MTR + latent_mtr_weight * latent MTR + AMTM (+ tm_weight * TM when tm_weight > 0).
"""

from __future__ import annotations

import math
import struct

import torch

from megamerge.models.common.keyed_random import STREAM_AMTM, STREAM_COMPRESSION, normal, uniform
from megamerge.models.common.losses import base_cross_entropy
from megamerge.models.common.transition_loss import transition_matrix_loss
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.masking import amtm_token_mask
from megamerge.models.mergedna.token_merging import (
    TokenState,
    global_merge_to,
    group_sizes,
    per_block_length,
    unmerge,
)
from megamerge.vocabulary import MASK, base_targets


def token_targets(cfg: MergeDNAConfig, base_lengths: torch.Tensor, seeds: torch.Tensor | None,
                  training: bool) -> torch.Tensor:
    """base_lengths [B] -> tokens L_b [B] long: sampled per sample in training (Gaussian around
    compression_mean, clipped to compression_range), fixed in eval. With per-sample `seeds` [B]
    the draw depends only on the sample (common/keyed_random.py); without, the global RNG is used."""
    n = base_lengths.float()
    lo, hi = cfg.compression_range
    if training:
        noise = torch.randn_like(n) if seeds is None else normal(seeds, STREAM_COMPRESSION).to(n.device)
        ratio = (noise * cfg.compression_std + cfg.compression_mean).clamp(lo, hi)
        target = (ratio * n).round()
        target = torch.maximum(target, (lo * n).ceil())
        target = torch.minimum(target, (hi * n).floor())
    else:
        target = (cfg.eval_compression * n).round()
    return target.clamp(min=1).long()


def _float32(value: float) -> float:
    """`value` rounded to float32. A product of two float32 values is exact in a Python float (48
    significant bits), so rounding it once gives float32 multiplication, bit for bit."""
    return struct.unpack("f", struct.pack("f", value))[0]


def latent_token_count(cfg: MergeDNAConfig, token_lengths: torch.Tensor | int) -> torch.Tensor | int:
    """K_b [B] long: the latent tokens pass 2 merges each sample's token_lengths [B] (L_b) down to;
    for one row's L_b as an int (counts on the host), the same float32 arithmetic."""
    if isinstance(token_lengths, int):
        return max(1, math.ceil(_float32(_float32(cfg.latent_compression) * token_lengths)))
    return (cfg.latent_compression * token_lengths.float()).ceil().clamp(min=1).long()


def merge_latent(cfg: MergeDNAConfig, tokens: TokenState, latent_map: torch.Tensor | None,
                 token_valid: torch.Tensor, point: int,
                 token_counts: tuple[int, ...] | None = None) -> tuple[TokenState, torch.Tensor]:
    """Pass 2's global merge (ToMe, no window) at latent merge point `point` (one of
    cfg.latent_merge_points) of its current tokens [B, T, D] (T = L before the first merge), whose
    map from the frozen tokens token_valid [B, L] is latent_map [B, L] -> [0, T) (None before the
    first merge). Returns (merged [B, T', D], the composed map [B, L] -> [0, T')); after the last
    point T' = K_b per sample. per_block: this point's share (token_merging.per_block_length);
    single_layer: the whole way to K_b in one burst. `token_counts`: token_valid's row sums on
    the host (with tokens.counts), so that the merge's widths are computed there."""
    start = token_valid.sum(1)  # [B] L_b
    target = latent_token_count(cfg, start)  # [B] K_b
    points = cfg.latent_merge_points
    step, steps = points.index(point), len(points)
    per_block = cfg.latent_merge_schedule == "per_block"
    if per_block:
        target = per_block_length(start, target, tokens.lengths, step, steps)
    host_target = None
    if token_counts is not None and tokens.counts is not None:
        host_target = tuple(latent_token_count(cfg, n) for n in token_counts)
        if per_block:
            host_target = tuple(per_block_length(n, k, c, step, steps)
                                for n, k, c in zip(token_counts, host_target, tokens.counts))
    merged, step_map = global_merge_to(tokens, target, cfg.merge_theta, host_target)
    return merged, step_map if latent_map is None else step_map.gather(1, latent_map)


def unmerge_latent(cfg: MergeDNAConfig, merged_x: torch.Tensor, merged_pos: torch.Tensor,
                   latent_map: torch.Tensor, token_pos: torch.Tensor) -> torch.Tensor:
    """Pass 2's latent states merged_x [B, K, D] (at merged_pos [B, K]) back to the L tokens they
    merged: [B, L, D], each in the frame of its token position token_pos [B, L]."""
    return unmerge(merged_x, latent_map, token_pos, merged_pos, cfg.merge_theta)


def amtm_token_count(cfg: MergeDNAConfig, token_lengths: torch.Tensor) -> torch.Tensor:
    """K_b [B] long: how many of each sample's token_lengths [B] local tokens AMTM masks."""
    return (cfg.amtm_mask_ratio * token_lengths.float()).round().clamp(min=1).long()


def amtm_loss(cfg: MergeDNAConfig, masked_logits: torch.Tensor, targets: torch.Tensor,
              base_mask: torch.Tensor, token_lengths: torch.Tensor, base_weights: torch.Tensor | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """AMTM on masked_logits [B, N, 4]: (loss, masked-base mean cross-entropy, correct, scored).
    Paper reading (Sec. 3.3, Eq. 7, L_AMTM = -1/K sum over masked positions): the cross-entropy is
    summed over every masked base and divided by K, the number of masked tokens (over the batch:
    sum_b K_b, each sample's K_b = amtm_token_count of its L_b tokens); "per_masked_base" divides
    by the number of masked bases instead. The per-base mean is returned either way, for the
    masked-base accuracy and perplexity that evaluation reports. `base_weights` [B, N] weigh each
    masked base's term (losses.py: the normaliser, bases or K, stays unweighted)."""
    per_base, correct, scored = base_cross_entropy(masked_logits, targets, select=base_mask,
                                                   weights=base_weights)
    if cfg.amtm_normalization == "per_masked_base":
        return per_base, per_base, correct, scored
    has_mask = base_mask.any(1)  # an all-N sample has tokens but no base to mask, and adds no K_b
    masked_tokens = (amtm_token_count(cfg, token_lengths) * has_mask).sum()
    loss = per_base * scored.clamp_min(1) / masked_tokens.clamp_min(1)
    return loss, per_base, correct, scored


def latent_key_bias(cfg: MergeDNAConfig, latent_map: torch.Tensor, token_valid: torch.Tensor,
                    n_groups: int) -> torch.Tensor | None:
    """Pass 2's attention bias after a latent merge [B, K]: log of how many local tokens (of
    token_valid [B, L], mapped by latent_map [B, L]) each latent token stands for, ToMe's
    size-proportional attention; None with size_proportional_attention off."""
    if not cfg.size_proportional_attention:
        return None
    # padding groups: 0, masked anyway
    return group_sizes(latent_map, token_valid, n_groups).clamp_min(1.0).log()


@torch.no_grad()
def amtm_base_mask(cfg: MergeDNAConfig, frozen: TokenState, latent_map: torch.Tensor,
                   base_valid: torch.Tensor, seeds: torch.Tensor | None) -> torch.Tensor:
    """Pass 3's masked bases [B, N] bool: local tokens of `frozen` (pass 1's tokens) drawn with
    P ~ 1/g^2, g the size of their latent group in latent_map [B, L] (pass 2), and every base of a
    drawn token (M_N = U(M_L, S)). Keyed by `seeds` [B] when given."""
    g = group_sizes(latent_map, frozen.valid, latent_map.shape[1])  # [B, L]: a map's groups number <= L
    n_mask = amtm_token_count(cfg, frozen.lengths)
    u = None if seeds is None else uniform(seeds, STREAM_AMTM, latent_map.shape[1]).to(g.device)
    token_mask = amtm_token_mask(latent_map, g, frozen.valid, n_mask, uniforms=u)  # [B, L]
    return token_mask.gather(1, frozen.assign) & base_valid


def mask_bases(input_ids: torch.Tensor, base_mask: torch.Tensor) -> torch.Tensor:
    """input_ids [B, N] with the bases of base_mask [B, N] replaced by MASK."""
    return torch.where(base_mask, torch.full_like(input_ids, MASK), input_ids)


def objective_outputs(
    cfg: MergeDNAConfig,
    input_ids: torch.Tensor,  # [B, N]
    base_valid: torch.Tensor,  # [B, N] bool
    logits: torch.Tensor,  # [B, N, 4] pass 1 (MTR)
    latent_logits: torch.Tensor,  # [B, N, 4] pass 2 (latent MTR)
    masked_logits: torch.Tensor,  # [B, N, 4] pass 3 (AMTM)
    base_mask: torch.Tensor,  # [B, N] bool: pass 3's masked bases, the only ones it scores
    token_lengths: torch.Tensor,  # [B] L_b
    latent_lengths: torch.Tensor,  # [B] K_b
    base_weights: torch.Tensor | None = None,  # [B, N] float: soft-masked bases' loss weight (None: all 1)
) -> dict[str, torch.Tensor]:
    """The losses (0-dim tensors; "loss" carries the gradient) and metrics of one step."""
    targets = base_targets(input_ids)
    mtr, _, _ = base_cross_entropy(logits, targets, weights=base_weights)
    latent_mtr, _, _ = base_cross_entropy(latent_logits, targets, weights=base_weights)
    amtm, amtm_per_base, correct, scored = amtm_loss(cfg, masked_logits, targets, base_mask, token_lengths,
                                                     base_weights)
    n_bases = base_valid.sum(1).float()
    out = {
        "loss": mtr + cfg.latent_mtr_weight * latent_mtr + amtm,
        "mtr": mtr,
        "latent_mtr": latent_mtr,
        "amtm": amtm,
        "amtm_per_base": amtm_per_base.detach(),
        "masked_correct": correct.detach(),
        "masked_count": scored.detach(),
        "bases_per_token": (n_bases / token_lengths).mean().detach(),
        "latent_bases_per_token": (n_bases / latent_lengths).mean().detach(),
    }
    if cfg.tm_weight > 0:
        out["tm"] = transition_matrix_loss(logits, input_ids)
        out["loss"] = out["loss"] + cfg.tm_weight * out["tm"]
    return out
