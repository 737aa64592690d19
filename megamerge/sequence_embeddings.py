"""Sequence embeddings from a MergeDNA or CARMANIA model, cut into windows and stitched, and the zarr
store that holds them (tools/embed.py is the command line; it reads FASTA or CSV into `Sequence`s;
which states are read, for --layer and --per-base: megamerge/embedding_states.py).

Store layout (S sequences, D = model dim; `*_offsets` are CSR row pointers):

    ids            [S] str             sequence ids, in input order
    labels         [S] str             CSV input with a label column only
    lengths        [S] int64           bases per sequence
    num_tokens     [S] int64           stitched tokens per sequence (CARMANIA: one per base)
    mean           [S, D] float32      --pool mean-tokens (the default): mean of the sequence's token states
    mean_bases     [S, D] float32      --pool mean-bases: mean over bases of their token's state (tokens
                                       weighted by the bases they cover, as finetune's mean_bases)
    max            [S, D] float32      --pool max: element-wise maximum over the sequence's tokens
    assignment     [sum lengths] int64       base -> token index within its sequence
    base_offsets   [S + 1] int64       bases of sequence i: rows base_offsets[i]:base_offsets[i+1] of
                                       assignment and per_base
    per_base       [sum lengths, D] float32  --per-base only: one vector per base
    tokens         [sum num_tokens, D] float32   --per-token only, in base order
    token_offsets  [S + 1] int64       --per-token only
    (attrs: the command's options, family, layer and its description, megamerge_version, description)

Arrays are chunked along their first axis (about 4 MiB a chunk), so reading one region of a
chromosome reads only its chunks; the store is written as it is computed (megamerge/embedding_store.py).
Their axes are named (zarr dimension_names: sequence, base, token, dim, offset), so
xarray.open_zarr(out, consolidated=False) opens the store as one Dataset.

Long sequences. MergeDNA's latent attention is global, so its cost grows with the square of the
length, and a model knows the lengths it was pre-trained on (train.py --seq-length, in the portable
config: tools/embed.py's default window), so a sequence longer than `window` bases is cut. One at
most `window` long is encoded in one piece, exactly as `model.encode` would. A longer one is cut
into kept blocks of stride = window - overlap bases, [0, stride), [stride, 2 * stride), ...; block
[a, b) is encoded in the window of `window` bases that starts `left` bases before it (clipped to
the sequence) and supplies the states of its own bases only:
  * MergeDNA (bidirectional): left = overlap // 2, right = overlap - left: the block is its window's
    centre.
  * CARMANIA (causal): left = overlap, right = 0: a base's state depends only on the bases before
    it, so all the context goes to the left.
The stitched state of a base IS its state in its block's window. Every interior base (at least `left`
bases from the sequence start and `right` from its end) therefore sits at least `left` bases from its
window's start and `right` from its end, and where the edges fall depends on --window and --overlap
only. With overlap = window - 1 and an odd window, each base has its own window, centred on it exactly
(for checking: N windows). CARMANIA sees only `layer * (attention window - 1)` bases back (its receptive
field): with left at least that, a base's state is the same in every window that holds that much of
its left context, so the stitched states equal one pass over the whole sequence. MergeDNA's latent
attention is global within a window, so no overlap makes its stitched states equal one pass over a
long sequence: neighbouring blocks come from different windows, and the guarantee is the margin.
Overlap 0 (MergeDNA's default, as before overlap existed) gives consecutive non-overlapping windows.

Stitched tokens: for each window in order, the tokens its kept bases belong to. A token that
straddles a block boundary is cut there (its kept bases map to its state in this window, the others
to the next window's tokens), so `assignment` stays a non-decreasing map into the sequence's tokens.
With overlap 0 no token is cut: the tokens are every window's tokens, in order.

Windows are encoded in groups of GROUP_BATCHES batches: inside a group, longest first, so a batch's
windows have similar lengths and padding (a right suffix of PAD, which the models mask) stays small.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from megamerge.embedding_states import StateChoice, WindowStates, window_states
from megamerge.embedding_store import new_store
from megamerge.vocabulary import PAD

POOLED_ARRAYS = {"mean-tokens": "mean", "mean-bases": "mean_bases", "max": "max"}  # --pool -> array
DIMENSIONS = {  # the axis names of each array of the layout above
    **dict.fromkeys(("ids", "labels", "lengths", "num_tokens"), ("sequence",)),
    **dict.fromkeys(POOLED_ARRAYS.values(), ("sequence", "dim")),
    "assignment": ("base",), "per_base": ("base", "dim"), "tokens": ("token", "dim"),
    "base_offsets": ("offset",), "token_offsets": ("offset",),
}
GROUP_BATCHES = 8  # batches sorted together; what a group holds in memory until it is written


class EmbedError(ValueError):
    """Bad input or output for an embedding run: the message names the file, row or flag."""


@dataclass
class Sequence:
    seq_id: str
    codes: np.ndarray  # uint8 [N] tokenizer ids
    label: str | None = None


@dataclass(frozen=True)
class Window:
    sequence: int  # index into the sequences
    start: int  # bases [start, end) of the sequence are encoded together
    end: int
    keep_start: int  # ... and bases [keep_start, keep_end) take their states from this window
    keep_end: int


def plan_windows(length: int, window: int, overlap: int, causal: bool) -> list[tuple[int, int, int, int]]:
    """(start, end, keep_start, keep_end) of each window of a sequence, in base order (module docstring)."""
    if length <= window:
        return [(0, length, 0, length)]
    stride = window - overlap
    left = overlap if causal else overlap // 2
    plan = []
    for keep_start in range(0, length, stride):
        start = max(keep_start - left, 0)
        plan.append((start, min(start + window, length), keep_start, min(keep_start + stride, length)))
    return plan


def window_bounds(length: int, window: int) -> list[tuple[int, int]]:
    """Consecutive non-overlapping windows (overlap 0), as megamerge/token_analysis.py cuts too."""
    return [(start, end) for start, end, _, _ in plan_windows(length, window, 0, causal=False)]


@dataclass
class EmbedOptions:
    choice: StateChoice  # family, layer, per-base source
    window: int  # bases per window
    overlap: int  # bases shared by consecutive windows
    batch_size: int  # windows per forward pass
    per_token: bool  # store every token's state
    pools: tuple[str, ...]  # keys of POOLED_ARRAYS


@dataclass
class Piece:
    """What one window contributes: its kept bases and the tokens they belong to."""

    tokens: np.ndarray  # [T, D] float32
    assign: np.ndarray  # [K] int64, kept base -> row of tokens
    bases: np.ndarray | None  # [K, D] float32 per-base states, when asked for


def kept_piece(states: WindowStates, row: int, window: Window) -> Piece:
    a, b = window.keep_start - window.start, window.keep_end - window.start  # in window coordinates
    assign = states.assign[row, a:b].numpy()  # non-decreasing: tokens are runs of adjacent bases
    first, last = int(assign[0]), int(assign[-1])
    # copies, so a group does not keep its batches' whole outputs alive
    bases = None if states.bases is None else states.bases[row, a:b].numpy().copy()
    return Piece(states.tokens[row, first:last + 1].numpy().copy(), (assign - first).astype(np.int64), bases)


def encode_group(model: nn.Module, sequences: list[Sequence], windows: list[Window], options: EmbedOptions,
                 device, bar: tqdm) -> list[Piece]:
    """The pieces of `windows`, in their order (run longest first: module docstring)."""
    order = sorted(range(len(windows)), key=lambda i: -(windows[i].end - windows[i].start))
    pieces: list = [None] * len(windows)
    for begin in range(0, len(order), options.batch_size):
        batch = order[begin:begin + options.batch_size]
        width = windows[batch[0]].end - windows[batch[0]].start
        ids = torch.full((len(batch), width), PAD, dtype=torch.long)  # [B, W]
        for row, i in enumerate(batch):
            w = windows[i]
            codes = sequences[w.sequence].codes[w.start:w.end]
            ids[row, :len(codes)] = torch.from_numpy(codes.astype(np.int64))
        states = window_states(model, ids.to(device), options.choice).to_host()
        for row, i in enumerate(batch):
            pieces[i] = kept_piece(states, row, windows[i])
        bar.update(sum(windows[i].end - windows[i].start for i in batch))
    return pieces


class RunningPool:
    """The pooled vectors of one sequence, summed in float64 window by window."""

    def __init__(self, dim: int):
        self.tokens, self.bases = 0, 0
        self.token_sum, self.base_sum = np.zeros(dim), np.zeros(dim)
        self.maximum = np.full(dim, -np.inf)

    def add(self, piece: Piece) -> None:
        self.tokens += len(piece.tokens)
        self.bases += len(piece.assign)
        states = piece.tokens.astype(np.float64)  # [T, D]
        self.token_sum += states.sum(0)
        self.base_sum += np.bincount(piece.assign, minlength=len(states)) @ states  # bases per token
        self.maximum = np.maximum(self.maximum, states.max(0))

    def vector(self, pool: str) -> np.ndarray:
        value = {"mean-tokens": self.token_sum / self.tokens, "mean-bases": self.base_sum / self.bases,
                 "max": self.maximum}[pool]
        return value.astype(np.float32)


class Stitcher:
    """Takes the pieces of all windows in base order: appends them to the store's growing arrays (token
    indices offset by the sequence's tokens so far) and pools each sequence when its last piece is in."""

    def __init__(self, store, dim: int, options: EmbedOptions):
        self.pools = options.pools
        self.assignment = store.growing("assignment", (), np.int64)
        self.tokens = store.growing("tokens", (dim,), np.float32) if options.per_token else None
        self.per_base = store.growing("per_base", (dim,), np.float32) if options.choice.per_base else None
        self.dim = dim
        self.num_tokens: list[int] = []  # per finished sequence
        self.pooled: dict[str, list[np.ndarray]] = {pool: [] for pool in options.pools}  # [D] per sequence

    def add(self, window: Window, piece: Piece, length: int) -> None:
        if window.keep_start == 0:
            self.running = RunningPool(self.dim)
        self.assignment.append(piece.assign + self.running.tokens)
        if self.tokens is not None:
            self.tokens.append(piece.tokens)
        if self.per_base is not None:
            self.per_base.append(piece.bases)
        self.running.add(piece)
        if window.keep_end == length:
            self.num_tokens.append(self.running.tokens)
            for pool in self.pools:
                self.pooled[pool].append(self.running.vector(pool))


def put_per_sequence(store, sequences: list[Sequence], stitcher: Stitcher, per_token: bool) -> None:
    lengths = np.array([len(seq.codes) for seq in sequences], dtype=np.int64)
    num_tokens = np.array(stitcher.num_tokens, dtype=np.int64)
    store.put("ids", np.array([seq.seq_id for seq in sequences], dtype=str))
    if any(seq.label is not None for seq in sequences):
        store.put("labels", np.array([seq.label or "" for seq in sequences], dtype=str))
    store.put("lengths", lengths)
    store.put("num_tokens", num_tokens)
    for pool, vectors in stitcher.pooled.items():
        store.put(POOLED_ARRAYS[pool], np.stack(vectors))
    store.put("base_offsets", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    if per_token:
        store.put("token_offsets", np.concatenate([[0], np.cumsum(num_tokens)]).astype(np.int64))


def embed(model: nn.Module, sequences: list[Sequence], options: EmbedOptions, device, out: Path, attrs: dict,
          progress: bool = True) -> dict:
    """Encode `sequences` and write the store at `out` (the module docstring); returns its totals."""
    causal = options.choice.family == "carmania"
    windows = [Window(s, *bounds) for s, seq in enumerate(sequences)
               for bounds in plan_windows(len(seq.codes), options.window, options.overlap, causal)]
    group_size = options.batch_size * GROUP_BATCHES
    bar = tqdm(total=sum(w.end - w.start for w in windows), desc="embedding", unit="bp", unit_scale=True,
               file=sys.stderr, disable=not progress)
    with new_store(out, DIMENSIONS) as store, bar:
        stitcher = Stitcher(store, model.cfg.dim, options)
        for begin in range(0, len(windows), group_size):
            group = windows[begin:begin + group_size]
            for window, piece in zip(group, encode_group(model, sequences, group, options, device, bar)):
                stitcher.add(window, piece, len(sequences[window.sequence].codes))
        put_per_sequence(store, sequences, stitcher, options.per_token)
        store.attrs(attrs)
    return {"sequences": len(sequences), "bases": sum(len(seq.codes) for seq in sequences),
            "tokens": sum(stitcher.num_tokens), "windows": len(windows)}
