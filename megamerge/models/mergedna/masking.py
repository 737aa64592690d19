"""Adaptive Masked Token Modeling: which local tokens to mask.

A local token j in latent group i (of g_i local tokens) is drawn with P(j) proportional to
1 / g_i^2, so tokens that the latent merge kept apart (informative ones) are masked more often.
Weighted sampling without replacement, with a different count per sample and no loop over the
batch, is Gumbel-top-k: rank log P + Gumbel noise and keep rank < K_b.
"""

from __future__ import annotations

import torch


def amtm_token_mask(
    group_of_token: torch.Tensor,  # [B, L] long: latent group of each local token
    group_sizes: torch.Tensor,  # [B, K] float: local tokens per latent group (g)
    valid: torch.Tensor,  # [B, L] bool
    n_mask: torch.Tensor,  # [B] long: tokens to mask per sample
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,  # [B, L] in (0, 1): supplied noise instead of the generator
) -> torch.Tensor:  # [B, L] bool
    g = group_sizes.gather(1, group_of_token).clamp_min(1.0)
    log_p = (-2.0 * g.log()).masked_fill(~valid, float("-inf"))
    u = (uniforms if uniforms is not None
         else torch.rand(log_p.shape, generator=generator, device=log_p.device))
    u = u.clamp(1e-20, 1.0 - 1e-7)
    keys = log_p - torch.log(-torch.log(u))
    order = keys.argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device)
                                            .expand_as(order))
    n_mask = torch.minimum(n_mask, valid.sum(1))
    return (rank < n_mask[:, None]) & valid
