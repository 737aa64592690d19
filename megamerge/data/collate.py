"""Batching variable-length samples into fixed-shape tensors: the codes (LongTensor, PAD-filled)
and their soft-mask flags (BoolTensor, False-filled), row for row and base for base."""

from __future__ import annotations

import numpy as np
import torch

from megamerge.vocabulary import PAD


def _right_padded(samples: list[np.ndarray], seq_len: int, fill, dtype) -> np.ndarray:
    batch = np.full((len(samples), seq_len), fill, dtype=dtype)  # [B, N]
    for row, values in enumerate(samples):
        if values.size > seq_len:
            raise ValueError(f"sample of length {values.size} exceeds seq_len {seq_len}")
        batch[row, : values.size] = values
    return batch


def collate_codes(samples: list[np.ndarray], seq_len: int) -> torch.Tensor:
    """uint8 code arrays (each at most seq_len long) -> LongTensor [B, seq_len], PAD-filled on the
    right. A fixed N (not the batch maximum) keeps every step the same shape for the compiler."""
    return torch.from_numpy(_right_padded(samples, seq_len, PAD, np.uint8)).long()


def collate_softmask(samples: list[np.ndarray], seq_len: int) -> torch.Tensor:
    """bool soft-mask arrays, aligned with collate_codes' rows -> BoolTensor [B, seq_len] (padding: False)."""
    return torch.from_numpy(_right_padded(samples, seq_len, False, bool))
