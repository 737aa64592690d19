"""MergeDNA: Local Encoder (learned tokenizer) -> Latent Encoder -> Latent Decoder -> Local Decoder,
trained with three passes per step (arXiv 2511.14806):

1. MTR: reconstruct every base from the merged tokens.
2. Latent MTR (weight lambda): the tokenizer is frozen (its pass-1 output, detached); the Latent
   Encoder additionally merges globally down to K = L/2, the K groups are unmerged back to L
   and decoded as in MTR.
3. AMTM: mask the bases of tokens drawn with P proportional to 1/g^2 (g from pass 2's latent
   groups), run the whole network on the masked input without latent merging, and score only
   the masked bases.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from megamerge.models.common.keyed_random import STREAM_AMTM, STREAM_COMPRESSION, normal, uniform
from megamerge.models.common.losses import base_cross_entropy
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.latent_decoder import LatentDecoder
from megamerge.models.mergedna.latent_encoder import LatentEncoder
from megamerge.models.mergedna.local_decoder import LocalDecoder
from megamerge.models.mergedna.local_encoder import LocalEncoder
from megamerge.models.mergedna.masking import amtm_token_mask
from megamerge.models.mergedna.token_merging import TokenState, group_sizes, unmerge
from megamerge.vocabulary import MASK, base_targets, check_input_ids


class MergeDNA(nn.Module):
    def __init__(self, cfg: MergeDNAConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.local_encoder = LocalEncoder(cfg)
        self.latent_encoder = LatentEncoder(cfg)
        self.latent_decoder = LatentDecoder(cfg)
        self.local_decoder = LocalDecoder(cfg)
        self.reset_parameters()

    # ----------------------------------------------------------------------------------- setup
    def reset_parameters(self) -> None:
        n_blocks = (self.cfg.local_encoder_layers + self.cfg.latent_encoder_layers
                    + self.cfg.latent_decoder_layers + self.cfg.local_decoder_layers)
        for name, p in self.named_parameters():
            if p.dim() == 1:  # norm gains
                nn.init.ones_(p)
            elif name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
                # Residual-branch outputs shrink with depth so the stream's variance stays O(1).
                nn.init.normal_(p, std=self.cfg.init_std / math.sqrt(2 * n_blocks))
            else:
                nn.init.normal_(p, std=self.cfg.init_std)

    def parameter_counts(self) -> dict[str, int]:
        parts = ("local_encoder", "latent_encoder", "latent_decoder", "local_decoder")
        counts = {p: sum(t.numel() for t in getattr(self, p).parameters()) for p in parts}
        counts["total"] = sum(counts.values())
        return counts

    # ------------------------------------------------------------------------------ pieces
    def token_targets(self, base_lengths: torch.Tensor, seeds: torch.Tensor | None = None) -> torch.Tensor:
        """How many tokens L_b each sample is merged to: sampled per sample in training
        (Gaussian around compression_mean, clipped to compression_range), fixed in eval.
        With per-sample `seeds` [B] the draw depends only on the sample (see sample_noise)."""
        n = base_lengths.float()
        lo, hi = self.cfg.compression_range
        if self.training:
            noise = torch.randn_like(n) if seeds is None else normal(seeds, STREAM_COMPRESSION).to(n.device)
            ratio = noise * self.cfg.compression_std + self.cfg.compression_mean
            ratio = ratio.clamp(lo, hi)
            target = (ratio * n).round()
            target = torch.maximum(target, (lo * n).ceil())
            target = torch.minimum(target, (hi * n).floor())
        else:
            target = (self.cfg.eval_compression * n).round()
        return target.clamp(min=1).long()

    def decode(self, tokens: TokenState, base_valid: torch.Tensor) -> torch.Tensor:
        """Latent Decoder + Local Decoder: token states at L -> base logits [B, N, 4]."""
        decoded = self.latent_decoder(tokens)
        return self.local_decoder(decoded.x, tokens.pos, tokens.assign, base_valid)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The MTR pass: reconstruct logits [B, N, 4] for every base."""
        base_valid = check_input_ids(input_ids)
        tokens = self.local_encoder(input_ids, self.token_targets(base_valid.sum(1)))
        latent, _ = self.latent_encoder(tokens)
        return self.decode(latent, base_valid)

    def encode(self, input_ids: torch.Tensor):
        """Latent-encoder states for downstream use: (hidden [B, L, D], assign [B, N] base ->
        token, token_mask [B, L]). Uses the fixed eval compression when the model is in eval."""
        base_valid = check_input_ids(input_ids)
        tokens = self.local_encoder(input_ids, self.token_targets(base_valid.sum(1)))
        latent, _ = self.latent_encoder(tokens)
        return latent.x, latent.assign, latent.valid

    # ------------------------------------------------------------------------------ losses
    def compute_losses(self, input_ids: torch.Tensor, seeds: torch.Tensor | None = None) -> dict:
        """The three passes on input_ids [B, N]. `seeds` [B] (from sample_noise.sample_seeds)
        makes every random draw a function of the sample alone; without it the global RNG is used."""
        cfg = self.cfg
        base_valid = check_input_ids(input_ids)
        n_bases = base_valid.sum(1)
        targets = base_targets(input_ids)
        token_targets = self.token_targets(n_bases, seeds)

        # Pass 1 - MTR.
        tokens = self.local_encoder(input_ids, token_targets)
        latent, _ = self.latent_encoder(tokens)
        logits = self.decode(latent, base_valid)
        mtr, _, _ = base_cross_entropy(logits, targets)

        # Pass 2 - latent MTR on the frozen tokenizer's output.
        frozen = tokens.detach()
        n_latent = (cfg.latent_compression * frozen.lengths.float()).ceil().clamp(min=1).long()
        merged, latent_map = self.latent_encoder(frozen, merge_to=n_latent)
        back = TokenState(
            x=unmerge(merged.x, latent_map, frozen.pos, merged.pos, cfg.merge_theta),
            pos=frozen.pos, sizes=frozen.sizes,
            valid=frozen.valid, assign=frozen.assign,
        )
        latent_logits = self.decode(back, base_valid)
        latent_mtr, _, _ = base_cross_entropy(latent_logits, targets)

        # Pass 3 - AMTM, masks drawn from pass 2's latent groups.
        with torch.no_grad():
            g = group_sizes(latent_map, frozen.valid, merged.x.shape[1])
            n_mask = (cfg.amtm_mask_ratio * frozen.lengths.float()).round().clamp(min=1).long()
            u = None if seeds is None else uniform(seeds, STREAM_AMTM, latent_map.shape[1]).to(g.device)
            token_mask = amtm_token_mask(latent_map, g, frozen.valid, n_mask, uniforms=u)
            base_mask = token_mask.gather(1, frozen.assign) & base_valid  # M_N = U(M_L, S)
        masked_ids = torch.where(base_mask, torch.full_like(input_ids, MASK), input_ids)
        masked_tokens = self.local_encoder(masked_ids, token_targets)
        masked_latent, _ = self.latent_encoder(masked_tokens)
        masked_logits = self.decode(masked_latent, base_valid)
        amtm, correct, scored = base_cross_entropy(masked_logits, targets, select=base_mask)

        loss = mtr + cfg.latent_mtr_weight * latent_mtr + amtm
        out = {
            "loss": loss,
            "mtr": mtr,
            "latent_mtr": latent_mtr,
            "amtm": amtm,
            "bases_per_token": float((n_bases / tokens.lengths).mean()),
            "latent_bases_per_token": float((n_bases / merged.lengths).mean()),
            "masked_correct": correct.detach(),
            "masked_count": scored.detach(),
            "token_lengths": tokens.sizes[tokens.valid].detach(),
        }
        if cfg.tm_weight > 0:
            from megamerge.models.common.transition_loss import transition_matrix_loss

            tm = transition_matrix_loss(logits, input_ids)
            out["tm"] = tm
            out["loss"] = loss + cfg.tm_weight * tm
        return out
