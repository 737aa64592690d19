"""The base vocabulary: DNA strings <-> integer ids, vectorised through a 256-entry lookup table.

The ids double as the on-disk uint8 codes of the data pipeline, so A, C, G, T are 0..3: the
reconstruction heads predict exactly those four classes and CARMANIA's 4x4 transition matrix
indexes them directly.
"""

from __future__ import annotations

import numpy as np
import torch

from megamerge.base_codes import ALPHABET

A, C, G, T, N, PAD, MASK = 0, 1, 2, 3, 4, 5, 6
BASES = "ACGT"
VOCAB_SIZE = 7
NUM_BASE_CLASSES = 4  # what the heads predict; N, PAD and MASK are never targets
IGNORE_INDEX = -100

_INVALID = 255
_ENCODE = np.full(256, _INVALID, dtype=np.uint8)
for _i, _ch in enumerate(ALPHABET):
    _ENCODE[ord(_ch)] = _i
    _ENCODE[ord(_ch.lower())] = _i
_DECODE = np.frombuffer(b"ACGTN-?", dtype=np.uint8)  # PAD -> '-', MASK -> '?'
_COMPLEMENT = np.array([T, G, C, A, N, PAD, MASK], dtype=np.uint8)


def encode(seq: str | bytes) -> np.ndarray:
    """Map a DNA string (upper or lower case) to uint8 ids; any other character is a ValueError."""
    raw = np.frombuffer(seq.encode("ascii", "replace") if isinstance(seq, str) else seq, dtype=np.uint8)
    ids = _ENCODE[raw]
    bad = np.flatnonzero(ids == _INVALID)
    if bad.size:
        off = int(bad[0])
        char = seq[off] if isinstance(seq, str) else chr(raw[off])
        raise ValueError(
            f"invalid base {char!r} at offset {off}: expected one of A, C, G, T, N (any case)"
            + (f"; {bad.size - 1} more invalid characters follow" if bad.size > 1 else "")
        )
    return ids


def encode_tensor(seq: str | bytes) -> torch.Tensor:
    """`encode` as a LongTensor [N]."""
    return torch.from_numpy(encode(seq).astype(np.int64))


def decode(ids: np.ndarray | torch.Tensor) -> str:
    """Inverse of `encode`; PAD shows as '-', MASK as '?'."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= VOCAB_SIZE):
        raise ValueError(f"ids must lie in [0, {VOCAB_SIZE}), got range [{ids.min()}, {ids.max()}]")
    return _DECODE[ids.astype(np.int64)].tobytes().decode("ascii")


def reverse_complement(ids: torch.Tensor) -> torch.Tensor:
    """Reverse complement along the last dim; N, PAD and MASK map to themselves."""
    table = torch.as_tensor(_COMPLEMENT, device=ids.device).to(ids.dtype)
    return table[ids.long()].flip(-1)


def base_targets(ids: torch.Tensor) -> torch.Tensor:
    """Reconstruction targets: A/C/G/T keep their id, everything else becomes IGNORE_INDEX."""
    return torch.where(ids < NUM_BASE_CLASSES, ids, torch.full_like(ids, IGNORE_INDEX))


def check_input_ids(input_ids: torch.Tensor) -> torch.Tensor:
    """The valid-base mask [B, N] of a right-padded batch of ids; ValueError on any other layout."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, bases], got shape {tuple(input_ids.shape)}")
    valid = input_ids != PAD
    pad_inside = (valid[:, 1:] & ~valid[:, :-1]).any()
    all_pad = ~valid[:, 0].all()
    if bool(pad_inside | all_pad):  # one sync for both checks; the message is worked out only on failure
        if bool(pad_inside):
            raise ValueError("PAD may only appear as a suffix of each row (right padding)")
        raise ValueError("every row needs at least one base that is not PAD")
    return valid
