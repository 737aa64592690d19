"""Task heads: a backbone (MergeDNA or CARMANIA, bare or wrapped by peft) plus a new linear head. The
model code knows nothing about tasks; this module reads the states it exposes.

Where the features come from:
* MergeDNA, sequence tasks: the Latent Encoder's output (`model.encode`). Both decoders are
  dropped (the paper's protocol), replaced by portable.EncoderOnlyRemoved.
* MergeDNA, per-base tasks: Latent Encoder -> Latent Decoder -> Local Decoder (unmerge with the
  tokenizer's map, local attention), whose normalised per-base states (`LocalDecoder.hidden_states`)
  feed the new head instead of the 4-way base head.
* CARMANIA: the normalised states of the last block, one per base.

Pooling of a sequence (MergeDNA): `mean_tokens` averages the valid latent tokens, each counted once;
`mean_bases` weights each token by the bases it covers (= the mean over bases of the state of the
token each base belongs to), so a long repetitive token counts as much as the bases it swallowed;
`last` takes the last valid position (meant for CARMANIA, whose last base has seen its whole
window). For CARMANIA every token is one base, so both means are the same.

The backbone stays in eval mode throughout (train() leaves it there): MergeDNA then tokenizes at the
fixed eval compression ratio both in fine-tuning and at test time, and no random draw depends on
the rank, which keeps data-parallel runs equal to single-process ones.
"""

from __future__ import annotations

import torch
from torch import nn

from megamerge.models.mergedna.token_merging import TokenState
from megamerge.portable import EncoderOnlyRemoved
from megamerge.vocabulary import check_input_ids

POOLINGS = ("mean_tokens", "mean_bases", "last")


def bare_model(backbone: nn.Module) -> nn.Module:
    """The megamerge model under a peft wrapper (LoRA layers stay injected), or backbone itself."""
    return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone


def drop_decoders(model: nn.Module) -> None:
    """Sequence tasks never run MergeDNA's decoders: free them (a full fine-tune then saves an
    encoder-only portable directory)."""
    for part in ("latent_decoder", "local_decoder"):
        setattr(model, part, EncoderOnlyRemoved(part))


def mergedna_sequence_states(model: nn.Module, input_ids: torch.Tensor, pooling: str):
    """-> (states [B, L, D], weights [B, L]) whose weighted mean is the pooled feature."""
    hidden, assign, token_valid = model.encode(input_ids)  # [B, L, D], [B, N], [B, L]
    if pooling == "mean_bases":
        base_valid = check_input_ids(input_ids).to(hidden.dtype)  # [B, N]
        weights = torch.zeros(token_valid.shape, dtype=hidden.dtype, device=hidden.device)
        weights.scatter_add_(1, assign, base_valid)  # [B, L] bases per token
    else:
        weights = token_valid.to(hidden.dtype)
    return hidden, weights


def mergedna_base_states(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-base states [B, N, D] from the Local Decoder, at the fixed eval compression."""
    base_valid = check_input_ids(input_ids)
    tokens = model.local_encoder(input_ids, model.token_targets(base_valid.sum(1)))
    latent, _ = model.latent_encoder(tokens)
    return local_decoder_states(model, latent, base_valid)


def local_decoder_states(model: nn.Module, latent: TokenState, base_valid: torch.Tensor) -> torch.Tensor:
    """The Local Decoder's normalised per-base states [B, N, D] (what its base head reads) from the
    Latent Encoder's output tokens."""
    decoded = model.latent_decoder(latent)
    return model.local_decoder.hidden_states(decoded.x, latent.pos, latent.assign, base_valid)


def carmania_states(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Normalised last-block states [B, N, D] (Carmania.forward without its next-base head)."""
    return model.hidden_states(input_ids)


def pool(states: torch.Tensor, weights: torch.Tensor, pooling: str) -> torch.Tensor:
    """states [B, L, D], weights [B, L] (0 on padding; valid positions form a prefix) -> [B, D]."""
    if pooling == "last":
        last = (weights > 0).sum(1) - 1  # [B]
        return states[torch.arange(states.shape[0], device=states.device), last]
    w = weights.unsqueeze(-1)
    return (states * w).sum(1) / w.sum(1).clamp(min=1e-6)


class TaskModel(nn.Module):
    """backbone + linear head. forward(input_ids [B, N]) -> [B, C] logits (classification), [B]
    (regression, in standardised units) or [B, N, C] (per-base)."""

    def __init__(self, backbone: nn.Module, family: str, task_type: str, num_outputs: int, pooling: str):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"--pooling {pooling!r}: choose one of {POOLINGS}")
        if family == "mergedna" and pooling == "last" and task_type != "per_base":
            raise ValueError("--pooling last is for CARMANIA (a causal model); MergeDNA's latent tokens "
                             "are bidirectional: use mean_tokens or mean_bases")
        self.backbone = backbone
        self.family = family
        self.task_type = task_type
        self.pooling = pooling
        self.head = nn.Linear(bare_model(backbone).cfg.dim, num_outputs)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # fixed eval compression (see the module docstring)
        return self

    def features(self, input_ids: torch.Tensor) -> torch.Tensor:
        model = bare_model(self.backbone)
        if self.task_type == "per_base":
            if self.family == "mergedna":
                return mergedna_base_states(model, input_ids)  # [B, N, D]
            return carmania_states(model, input_ids)
        if self.family == "mergedna":
            states, weights = mergedna_sequence_states(model, input_ids, self.pooling)
        else:
            states = carmania_states(model, input_ids)
            weights = check_input_ids(input_ids).to(states.dtype)
        return pool(states, weights, self.pooling)  # [B, D]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(input_ids))
        return out.squeeze(-1) if self.task_type == "regression" else out
