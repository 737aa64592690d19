"""The `transformers` classes of an exported MergeDNA. This file is the root of the generated
`modeling_mergedna.py`: inline_source.py writes it out with every megamerge definition it reaches
(the model modules, finetune/heads.py's pooling), so it runs on torch and transformers alone.

Module names are megamerge's own (local_encoder, latent_encoder, latent_decoder, local_decoder at
the top, `head` for a task head), so a portable state dict loads unchanged and a LoRA adapter saved
by tools/finetune.py (peft over the bare megamerge model) loads onto these classes unchanged.
Tokenization always runs at the fixed eval compression, as megamerge's fine-tuning does (the
backbone stays in eval there): a `transformers` Trainer's train() mode draws no random ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput
from transformers.utils import ModelOutput

from megamerge.finetune.heads import mergedna_base_states, mergedna_sequence_states, pool
from megamerge.hf_export.configuration_mergedna import MergeDNAHFConfig
from megamerge.models.mergedna.config import MergeDNAConfig
from megamerge.models.mergedna.latent_decoder import LatentDecoder
from megamerge.models.mergedna.latent_encoder import LatentEncoder
from megamerge.models.mergedna.local_decoder import LocalDecoder
from megamerge.models.mergedna.local_encoder import LocalEncoder
from megamerge.models.mergedna.objective import token_targets
from megamerge.models.mergedna.token_merging import unmerge
from megamerge.vocabulary import PAD, check_input_ids

# MergeDNA's latent tokens are bidirectional: "last" (a CARMANIA pooling) does not apply.
POOLINGS_EXPORTED = ("mean_tokens", "mean_bases")


@dataclass
class MergeDNAModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None  # [B, L, D] Latent Encoder states (megamerge's encode)
    token_mask: torch.Tensor | None = None  # [B, L] bool, valid latent tokens (a prefix of each row)
    base_to_token: torch.Tensor | None = None  # [B, N] long, the token each base was merged into
    base_hidden_state: torch.Tensor | None = None  # [B, N, D] each base's token state, unmerged


class MergeDNAPreTrainedModel(PreTrainedModel):
    config_class = MergeDNAHFConfig
    base_model_prefix = "mergedna"
    main_input_name = "input_ids"

    def _build_backbone(self, config: MergeDNAHFConfig, decoders: bool) -> None:
        # from_dict: an export written before an option existed loads with the behaviour it was trained with
        self.cfg = MergeDNAConfig.from_dict(config.mergedna)
        self.local_encoder = LocalEncoder(self.cfg)
        self.latent_encoder = LatentEncoder(self.cfg)
        if decoders:
            self.latent_decoder = LatentDecoder(self.cfg)
            self.local_decoder = LocalDecoder(self.cfg)

    def _init_weights(self, module: nn.Module) -> None:
        # Only what a checkpoint lacks is initialised (a new task head); megamerge's init for the rest.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif (hasattr(module, "weight") and isinstance(module.weight, nn.Parameter)
              and module.weight.dim() == 1):
            nn.init.ones_(module.weight)

    def token_targets(self, base_lengths: torch.Tensor) -> torch.Tensor:
        return token_targets(self.cfg, base_lengths, None, False)

    def latent_state(self, input_ids: torch.Tensor):
        """megamerge's MergeDNA.encode at the eval compression, as the Latent Encoder's TokenState."""
        base_valid = check_input_ids(input_ids)
        tokens = self.local_encoder(input_ids, self.token_targets(base_valid.sum(1)))
        return self.latent_encoder(tokens)[0]

    def encode(self, input_ids: torch.Tensor):
        """(hidden [B, L, D], assign [B, N], valid [B, L]), as megamerge's MergeDNA.encode returns."""
        latent = self.latent_state(input_ids)
        return latent.x, latent.assign, latent.valid


def padded_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """megamerge marks padding with the PAD id; a tokenizer's attention_mask says the same thing."""
    if attention_mask is None:
        return input_ids
    return input_ids.masked_fill(attention_mask == 0, PAD)


class MergeDNAModel(MergeDNAPreTrainedModel):
    """Latent Encoder states, the base -> token map and the per-base (unmerged) states."""

    def __init__(self, config: MergeDNAHFConfig):
        super().__init__(config)
        self._build_backbone(config, decoders=False)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        input_ids = padded_ids(input_ids, attention_mask)
        latent = self.latent_state(input_ids)  # x [B, L, D], assign [B, N], valid [B, L]
        B, N = latent.assign.shape
        base_pos = torch.arange(N, device=latent.x.device, dtype=torch.float32).expand(B, N)
        per_base = unmerge(latent.x, latent.assign, base_pos, latent.pos, self.cfg.merge_theta)  # [B, N, D]
        return MergeDNAModelOutput(last_hidden_state=latent.x, token_mask=latent.valid,
                                   base_to_token=latent.assign, base_hidden_state=per_base)


class MergeDNAForSequenceClassification(MergeDNAPreTrainedModel):
    """Pooled Latent Encoder states -> linear head (megamerge/finetune/heads.py's sequence task)."""

    def __init__(self, config: MergeDNAHFConfig):
        super().__init__(config)
        self._build_backbone(config, decoders=False)
        self.head = nn.Linear(self.cfg.dim, config.num_labels)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs):
        states, weights = mergedna_sequence_states(self, padded_ids(input_ids, attention_mask),
                                                   self.config.pooling)
        logits = self.head(pool(states, weights, self.config.pooling))  # [B, C]
        if self.config.num_labels == 1:  # regression: back from standardised targets to label units
            logits = logits * self.config.label_std + self.config.label_mean
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class MergeDNAForTokenClassification(MergeDNAPreTrainedModel):
    """Per-base states through both decoders (unmerge, local attention) -> linear head [B, N, C]."""

    def __init__(self, config: MergeDNAHFConfig):
        super().__init__(config)
        self._build_backbone(config, decoders=True)
        self.head = nn.Linear(self.cfg.dim, config.num_labels)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs):
        logits = self.head(mergedna_base_states(self, padded_ids(input_ids, attention_mask)))  # [B, N, C]
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return TokenClassifierOutput(loss=loss, logits=logits)
