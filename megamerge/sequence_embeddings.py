"""Sequence embeddings from a MergeDNA model's Latent Encoder, and the zarr store that holds them
(tools/embed.py is the command line; it reads FASTA or CSV into `Sequence`s).

Store layout (S sequences, D = model dim; `*_offsets` are CSR row pointers):

    ids                [S] str           sequence ids, in input order
    labels             [S] str           CSV input with a label column only
    lengths            [S] int64         bases per sequence
    num_tokens         [S] int64         latent tokens per sequence (all windows)
    mean               [S, D] float32    mean of the sequence's latent-encoder token states
    assignment         [sum lengths] int64   base -> token index within its sequence
    base_offsets       [S + 1] int64     bases of sequence i: assignment[base_offsets[i]:base_offsets[i+1]]
    tokens             [sum num_tokens, D] float32   per_token only, in base order
    token_offsets      [S + 1] int64     per_token only
    (attrs: model, window, dtype, megamerge_version, description)

Long sequences. The model was pre-trained on fixed-length sequences (train.py --seq-length,
stored in the portable config; 4096 if absent), and latent attention is global, so cost grows
with length squared. A sequence longer than `window` bases (tools/embed.py --window) is cut into consecutive,
non-overlapping windows of `window` bases (the last one shorter); each window is encoded on its
own, its tokens are appended in order (token indices of later windows are offset by the tokens
before them, so `assignment` stays a map into the sequence's tokens), and the mean is taken over
all tokens of all windows. Tokens never span a window boundary, and no attention crosses one.
A sequence at most `window` long is encoded in one piece, exactly as `model.encode` would.

Windows are sorted by length and batched (`batch_size`) so padding stays small; PAD is a right
suffix, which the model masks.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from megamerge.vocabulary import PAD


class EmbedError(ValueError):
    """Bad input or output for an embedding run: the message names the file, row or flag."""


@dataclass
class Sequence:
    seq_id: str
    codes: np.ndarray  # uint8 [N] tokenizer ids
    label: str | None = None


def window_bounds(length: int, window: int) -> list[tuple[int, int]]:
    return [(start, min(start + window, length)) for start in range(0, length, window)]


@torch.no_grad()
def encode_windows(model, windows: list[np.ndarray], batch_size: int, device, progress: bool = True
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(token states [L_w, D] float32, base -> token [n_w]) per window, in the given order."""
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i]))
    results: list = [None] * len(windows)
    with tqdm(total=sum(len(w) for w in windows), desc="embedding", unit="bp", file=sys.stderr,
              disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = len(windows[batch[0]])
            ids = torch.full((len(batch), width), PAD, dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, :len(windows[i])] = torch.from_numpy(windows[i].astype(np.int64))
            hidden, assign, valid = model.encode(ids.to(device))
            hidden, assign, valid = hidden.float().cpu(), assign.cpu(), valid.cpu()
            for row, i in enumerate(batch):
                n_tokens = int(valid[row].sum())
                results[i] = (hidden[row, :n_tokens].numpy(), assign[row, :len(windows[i])].numpy())
            bar.update(sum(len(windows[i]) for i in batch))
    return results


def embed(model, sequences: list[Sequence], window: int, batch_size: int, device,
          progress: bool = True) -> dict:
    """Everything the store holds, as numpy arrays (see the module docstring)."""
    pieces, owners = [], []
    for s, seq in enumerate(sequences):
        for a, b in window_bounds(len(seq.codes), window):
            pieces.append(seq.codes[a:b])
            owners.append(s)
    encoded = encode_windows(model, pieces, batch_size, device, progress)
    tokens: list[list[np.ndarray]] = [[] for _ in sequences]
    assignment: list[list[np.ndarray]] = [[] for _ in sequences]
    for s, (hidden, assign) in zip(owners, encoded):  # windows of a sequence are in order
        offset = sum(len(t) for t in tokens[s])
        tokens[s].append(hidden)
        assignment[s].append(assign.astype(np.int64) + offset)
    per_sequence = [np.concatenate(t) for t in tokens]
    lengths = np.array([len(seq.codes) for seq in sequences], dtype=np.int64)
    num_tokens = np.array([len(t) for t in per_sequence], dtype=np.int64)
    return {
        "ids": np.array([seq.seq_id for seq in sequences], dtype=str),
        "labels": (np.array([seq.label or "" for seq in sequences], dtype=str)
                   if any(seq.label is not None for seq in sequences) else None),
        "lengths": lengths,
        "num_tokens": num_tokens,
        "mean": np.stack([t.mean(0) for t in per_sequence]).astype(np.float32),
        "assignment": np.concatenate([np.concatenate(a) for a in assignment]),
        "base_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "tokens": np.concatenate(per_sequence).astype(np.float32),
        "token_offsets": np.concatenate([[0], np.cumsum(num_tokens)]).astype(np.int64),
    }


def write_store(arrays: dict, out: Path, per_token: bool, attrs: dict) -> None:
    import zarr

    if out.exists():
        raise EmbedError(f"--out {out} already exists; choose a new path")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        root = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
        for name, value in arrays.items():
            if value is None or (name in ("tokens", "token_offsets") and not per_token):
                continue
            chunks = (min(len(value), 4096), *value.shape[1:]) if len(value) else None
            # Variable-length UTF-8 for ids and labels: the string type zarr v3 has a registered spec for.
            dtype = str if value.dtype.kind == "U" else value.dtype
            array = root.create_array(name, shape=value.shape, dtype=dtype, chunks=chunks)
            array[...] = value
        root.attrs.update(attrs)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
