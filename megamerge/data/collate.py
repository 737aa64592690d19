"""Batching variable-length samples into a fixed-shape LongTensor."""

from __future__ import annotations

import numpy as np
import torch

from megamerge.vocabulary import PAD


def collate_codes(samples: list[np.ndarray], seq_len: int) -> torch.Tensor:
    """uint8 code arrays (each at most seq_len long) -> LongTensor [B, seq_len], PAD-filled on the
    right. A fixed N (not the batch maximum) keeps every step the same shape for the compiler."""
    batch = np.full((len(samples), seq_len), PAD, dtype=np.uint8)  # [B, N]
    for row, codes in enumerate(samples):
        if codes.size > seq_len:
            raise ValueError(f"sample of length {codes.size} exceeds seq_len {seq_len}")
        batch[row, : codes.size] = codes
    return torch.from_numpy(batch).long()
