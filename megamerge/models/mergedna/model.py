"""MergeDNA: Local Encoder (learned tokenizer) -> Latent Encoder -> Latent Decoder -> Local Decoder,
trained with three passes per step (arXiv 2511.14806):

1. MTR: reconstruct every base from the merged tokens.
2. Latent MTR (weight lambda): the tokenizer is frozen (its pass-1 output, detached); the Latent
   Encoder additionally merges globally, a share after every block, down to K = L/2, the K groups
   are unmerged back to L and decoded as in MTR.
3. AMTM: mask the bases of tokens drawn with P proportional to 1/g^2 (g from pass 2's latent
   groups), run the whole network on the masked input without latent merging, and score only
   the masked bases.

The defaults are the paper's method; megamerge's variants are named options of MergeDNAConfig
(`paper_deviations()` lists those a config selects): rotary_merge (the paper: plain average, each
base gets its token's vector on unmerge), merge_selection (the paper: top r_l pairs per window),
amtm_normalization (the paper: summed over masked bases, divided by the masked tokens K),
latent_merge_schedule (the paper: ToMe-style merges after every Latent Encoder block) and
size_proportional_attention (the paper: ToMe's log-size key bias after each latent merge).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from megamerge.models.mergedna import objective
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.latent_decoder import LatentDecoder
from megamerge.models.mergedna.latent_encoder import LatentEncoder
from megamerge.models.mergedna.local_decoder import LocalDecoder
from megamerge.models.mergedna.local_encoder import HostCounts, LocalEncoder, host_counts
from megamerge.models.mergedna.token_merging import TokenState
from megamerge.vocabulary import check_input_ids


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
        """How many tokens L_b [B] each sample is merged to (objective.token_targets): sampled per
        sample in training, fixed in eval."""
        return objective.token_targets(self.cfg, base_lengths, seeds, self.training)

    def tokenize(self, input_ids: torch.Tensor, base_valid: torch.Tensor, targets: torch.Tensor,
                 counts: HostCounts | None = None) -> TokenState:
        """The Local Encoder on input_ids [B, N] to targets [B] tokens, its merges sized on the host
        (`counts`: local_encoder.host_counts, taken here when not given)."""
        if counts is None:
            counts = host_counts(base_valid, targets)
        return self.local_encoder(input_ids, targets, counts)

    def decode(self, tokens: TokenState, base_valid: torch.Tensor,
               base_counts: tuple[int, ...] | None = None) -> torch.Tensor:
        """Latent Decoder + Local Decoder: token states at L -> base logits [B, N, 4]
        (`base_counts`: base_valid's row sums, when known on the host)."""
        decoded = self.latent_decoder(tokens)
        return self.local_decoder(decoded.x, tokens.pos, tokens.assign, base_valid, base_counts)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The MTR pass: reconstruct logits [B, N, 4] for every base."""
        base_valid = check_input_ids(input_ids)
        tokens = self.tokenize(input_ids, base_valid, self.token_targets(base_valid.sum(1)))
        latent, _ = self.latent_encoder(tokens)
        return self.decode(latent, base_valid)

    def encode(self, input_ids: torch.Tensor, layer: int | None = None):
        """Latent-encoder states for downstream use: (hidden [B, L, D], assign [B, N] base ->
        token, token_mask [B, L]). Uses the fixed eval compression when the model is in eval.
        `layer`: see encode_state."""
        latent = self.encode_state(input_ids, layer)
        return latent.x, latent.assign, latent.valid

    def encode_state(self, input_ids: torch.Tensor, layer: int | None = None) -> TokenState:
        """The Latent Encoder's tokens after `layer` of its blocks, as a TokenState (x, pos, assign,
        valid). None or latent_encoder_layers: its output, final norm included; 0 < layer < that:
        the residual stream after that many blocks, un-normalised; 0: the Local Encoder's output."""
        depth = self.cfg.latent_encoder_layers
        if layer is not None and not 0 <= layer <= depth:
            raise ValueError(f"layer {layer}: the Latent Encoder has layers 0..{depth} "
                             "(0 is the Local Encoder's output)")
        base_valid = check_input_ids(input_ids)
        tokens = self.tokenize(input_ids, base_valid, self.token_targets(base_valid.sum(1)))
        if layer is None or layer == depth:
            return self.latent_encoder(tokens)[0]
        return self.latent_encoder.after_blocks(tokens, layer)

    # ------------------------------------------------------------------------------ losses
    def compute_losses(self, input_ids: torch.Tensor, seeds: torch.Tensor | None = None,
                       base_weights: torch.Tensor | None = None) -> dict:
        """The three passes on input_ids [B, N] (objective.py holds their shared pieces). `seeds`
        [B] (common/keyed_random.sample_seeds) makes every random draw a function of the sample
        alone; without it the global RNG is used. `base_weights` [B, N] weigh each base's loss
        terms (soft-masked repeats, common/losses.py); None weighs all alike."""
        cfg = self.cfg
        base_valid = check_input_ids(input_ids)
        token_targets = self.token_targets(base_valid.sum(1), seeds)
        counts = host_counts(base_valid, token_targets)  # passes 1 and 3 merge alike
        base_counts = None if counts is None else counts[0]

        # Pass 1 - MTR.
        tokens = self.tokenize(input_ids, base_valid, token_targets, counts)  # [B, L, D]
        latent, _ = self.latent_encoder(tokens)
        logits = self.decode(latent, base_valid, base_counts)  # [B, N, 4]

        # Pass 2 - latent MTR on the frozen tokenizer's output, merged to K and back to L.
        frozen = tokens.detach()
        merged, latent_map = self.latent_encoder(frozen, merge_latent=True)  # [B, K, D], [B, L]
        back = replace(frozen, x=objective.unmerge_latent(cfg, merged.x, merged.pos, latent_map, frozen.pos))
        latent_logits = self.decode(back, base_valid, base_counts)

        # Pass 3 - AMTM, masks drawn from pass 2's latent groups.
        base_mask = objective.amtm_base_mask(cfg, frozen, latent_map, base_valid, seeds)  # [B, N]
        masked_ids = objective.mask_bases(input_ids, base_mask)
        masked_tokens = self.tokenize(masked_ids, base_valid, token_targets, counts)
        masked_latent, _ = self.latent_encoder(masked_tokens)
        masked_logits = self.decode(masked_latent, base_valid, base_counts)

        out = objective.objective_outputs(cfg, input_ids, base_valid, logits, latent_logits, masked_logits,
                                          base_mask, tokens.lengths, merged.lengths, base_weights)
        # Everything stays a tensor: the trainer moves the step's numbers to the host once.
        out["bases_per_token"] = out["bases_per_token"].detach()
        out["latent_bases_per_token"] = out["latent_bases_per_token"].detach()
        # [B, L] bases per token, 0 on padding (the histogram drops them)
        out["token_lengths"] = tokens.sizes.detach()
        return out
