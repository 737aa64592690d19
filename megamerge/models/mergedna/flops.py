"""Model FLOPs of one MergeDNA training step, for MFU (design notes, section 5).

Each module is counted at its own length: local modules at N bases, latent modules at L tokens
(in the global-merge pass, the Latent Encoder blocks at the widths the merge schedule leaves them:
shrinking evenly from L towards K block by block with per_block, L then K with single_layer). 2 FLOPs
per multiply-add; forward + backward = 3x forward; pass 2 reuses pass 1's (detached) tokenizer
output, so the Local Encoder counts only in passes 1 and 3.
"""

from __future__ import annotations

from megamerge.models.mergedna.config import MergeDNAConfig


def block_forward_flops(cfg: MergeDNAConfig, length: float, attended: float) -> float:
    """One Transformer block over `length` tokens, each attending to `attended` keys."""
    matmul = 2 * length * (4 * cfg.dim * cfg.dim + 3 * cfg.dim * cfg.ffn_dim)
    attention = 2 * 2 * length * attended * cfg.dim  # scores and the weighted sum
    return matmul + attention


def mergedna_step_flops(cfg: MergeDNAConfig, n: float, l: float, k: float) -> float:
    """Training FLOPs per sequence of n bases merged to l tokens (k latent tokens in pass 2)."""
    span = 2 * cfg.window + 1

    def local_encoder(length_in: float) -> float:
        n_layers = cfg.local_encoder_layers
        total = 0.0
        for i in range(n_layers):  # the merge schedule shrinks tokens evenly from n to l
            t = length_in - i * (length_in - l) / n_layers
            total += block_forward_flops(cfg, t, min(span, t))
        return total

    def latent(length: float, blocks: int) -> float:
        return blocks * block_forward_flops(cfg, length, length)

    local_decoder = cfg.local_decoder_layers * block_forward_flops(cfg, n, min(span, n)) + 2 * n * cfg.dim * 4
    full_pass = (local_encoder(n) + latent(l, cfg.latent_encoder_layers)
                 + latent(l, cfg.latent_decoder_layers) + local_decoder)
    merging_encoder = sum(latent(width, 1) for width in latent_merge_widths(cfg, l, k))
    merge_pass = merging_encoder + latent(l, cfg.latent_decoder_layers) + local_decoder
    return 3 * (2 * full_pass + merge_pass)


def latent_merge_widths(cfg: MergeDNAConfig, l: float, k: float) -> list[float]:
    """The tokens each Latent Encoder block sees in the global-merge pass (from l down to k at
    cfg.latent_merge_points; per_block's even share of the merges, token_merging.per_block_length,
    without its rounding)."""
    n = cfg.latent_encoder_layers
    if cfg.latent_merge_schedule == "per_block":  # points 1..n: block i follows i merges
        return [l - i * (l - k) / n for i in range(n)]
    m = cfg.latent_merge_layer
    return [l] * m + [k] * (n - m)


def training_flops_per_sequence(cfg: MergeDNAConfig, n: int, means: dict) -> float:
    """`mergedna_step_flops` at the token counts this run's logged compression ratios imply
    (`means` holds the averaged bases_per_token and latent_bases_per_token)."""
    return mergedna_step_flops(cfg, n, n / means["bases_per_token"], n / means["latent_bases_per_token"])
