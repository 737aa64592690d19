"""The `transformers` class of an exported CARMANIA, root of the generated `modeling_carmania.py`
(inline_source.py writes it out with the megamerge definitions it reaches).

The model's modules are built by megamerge's own Carmania and keep its names (tok_embeddings,
layers, norm, output), so portable weights and tools/finetune.py LoRA adapters load unchanged; the
forward passes are Carmania's own methods, called on this module. generate() runs through
transformers' generation loop with megamerge's sliding-window cache as its `cache` (it holds
the last window - 1 keys per layer, so a step costs O(window) whatever the length so far).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from megamerge.hf_export.configuration_carmania import CarmaniaHFConfig
from megamerge.models.carmania.config import CarmaniaConfig
from megamerge.models.carmania.kv_cache import SlidingWindowKVCache
from megamerge.models.carmania.model import Carmania
from megamerge.models.common.losses import base_cross_entropy
from megamerge.vocabulary import NUM_BASE_CLASSES, PAD, VOCAB_SIZE, base_targets


class CarmaniaForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = CarmaniaHFConfig
    base_model_prefix = "carmania"
    main_input_name = "input_ids"

    def __init__(self, config: CarmaniaHFConfig):
        super().__init__(config)
        self.cfg = CarmaniaConfig(**config.carmania)
        core = Carmania(self.cfg)
        self.tok_embeddings, self.layers, self.norm, self.output = (
            core.tok_embeddings, core.layers, core.norm, core.output)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass  # every weight comes from the checkpoint (Carmania initialised them when built)

    def _rope(self, pos: torch.Tensor, batch: int):
        return Carmania._rope(self, pos, batch)

    def new_cache(self) -> SlidingWindowKVCache:
        return Carmania.new_cache(self)

    def hidden_states(self, input_ids: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        return Carmania.hidden_states(self, input_ids, layer)

    def vocabulary_logits(self, base_logits: torch.Tensor) -> torch.Tensor:
        """[B, T, 4] over A C G T -> [B, T, vocabulary]: N, PAD and MASK are never predicted."""
        never = base_logits.new_full((*base_logits.shape[:-1], VOCAB_SIZE - NUM_BASE_CLASSES), float("-inf"))
        return torch.cat((base_logits, never), -1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, cache=None,
                use_cache: bool | None = None, labels: torch.Tensor | None = None,
                **kwargs) -> CausalLMOutputWithPast:
        """Without a cache: Carmania.forward on a right-padded batch. With one (generation): the
        cached continuation, which takes no padding (all rows share the prompt length). A cache that
        is not megamerge's (transformers' default, empty) is replaced by a new one."""
        cache = cache if isinstance(cache, SlidingWindowKVCache) else None
        if cache is None and use_cache:
            cache = self.new_cache()
        if cache is not None:
            if attention_mask is not None and not bool(attention_mask.all()):
                raise ValueError("CARMANIA generates from prompts of one length: no padding in the batch")
            base_logits = Carmania.forward_cached(self, input_ids, cache)  # [B, T, 4]
        else:
            if attention_mask is not None:
                input_ids = input_ids.masked_fill(attention_mask == 0, PAD)
            base_logits = Carmania.forward(self, input_ids)  # [B, N, 4]
        loss = None
        if labels is not None:  # position t predicts base t + 1
            loss = base_cross_entropy(base_logits[:, :-1], base_targets(labels[:, 1:]))[0]
        return CausalLMOutputWithPast(loss=loss, logits=self.vocabulary_logits(base_logits), cache=cache)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, cache=None,
                                      attention_mask: torch.Tensor | None = None, **kwargs) -> dict:
        """Feed only what the cache has not consumed yet."""
        if isinstance(cache, SlidingWindowKVCache) and cache.length > 0:
            input_ids = input_ids[:, cache.length:]
        else:
            cache = None
        return {"input_ids": input_ids, "cache": cache, "use_cache": True, "attention_mask": attention_mask}
