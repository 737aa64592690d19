"""Merge decisions that do not come from the learned grouping embedding: the controls of the
tokenizer ablation (issue 28, benchmarks/tokenizer_ablation.py). Each returns a pair similarity
[B, L-1] in [-1, 1] that replaces the grouping cosine in `local_window_merge`; everything else
(the blocks, the merge budget, the per-window quotas, the averaging) stays the trained model's.

* random: every adjacent pair scores uniformly at random, so each window still merges exactly the
  pairs its quota asks for (the quotas depend on counts, not scores) but which pairs is chance.
* fixed: the sample's N_b bases are cut into L_b chunks of N_b / L_b bases (base n belongs to chunk
  floor(n * L_b / N_b)); a pair scores 1 if both tokens start in the same chunk, else -1. Merges
  are ranked across the whole sequence (the chunking has no per-window budget), so every layer
  merges inside chunks while it can. At L = N/2 (eval_compression's default) the end state is the
  chunking exactly; at other ratios a layer's merges can pair a chunk's bases unevenly and a few
  boundaries land a base off (tests/unit/test_merge_decisions.py bounds how many).
"""

from __future__ import annotations

import torch

from megamerge.models.mergedna.token_merging import TokenState


def random_similarity(state: TokenState) -> torch.Tensor:  # [B, L-1]
    B, L = state.valid.shape
    return torch.rand(B, max(L - 1, 0), device=state.x.device) * 2 - 1


def fixed_chunk(base: torch.Tensor, n_bases: torch.Tensor, target_tokens: torch.Tensor) -> torch.Tensor:
    """The chunk floor(n * L_b / N_b) of base positions base [B, M] (long) of samples with n_bases
    [B] bases cut into target_tokens [B] chunks -> [B, M]."""
    return base * target_tokens[:, None] // n_bases.clamp(min=1)[:, None]


def fixed_chunk_similarity(state: TokenState, target_tokens: torch.Tensor) -> torch.Tensor:  # [B, L-1]
    """target_tokens [B]: L_b, the chunks each sample is cut into."""
    sizes = state.sizes.float()  # [B, L]
    first_base = (sizes.cumsum(1) - sizes).long()  # [B, L] tokens are contiguous runs of bases
    chunk = fixed_chunk(first_base, sizes.sum(1).long(), target_tokens)  # [B, L]
    same = chunk[:, :-1] == chunk[:, 1:]
    return same.float() * 2 - 1
