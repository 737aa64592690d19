"""Which of a model's states an embedding run reads (tools/embed.py --layer and --per-base), for
MergeDNA and CARMANIA, one batch of windows at a time.

`--layer K` counts blocks whose output has been taken, so K = 0 is the input of the first block:

MergeDNA. Tokens are the Latent Encoder's (MergeDNA.encode_state). K = latent_encoder_layers, the
default, is the Latent Encoder's output after its final norm, exactly what `encode` returns;
0 < K < that is the residual stream after K blocks, un-normalised (as Hugging Face's
hidden_states); K = 0, also called `local`, is the Local Encoder's output, the merged tokens
before any latent block. Per-base states come from one of two places:
  * `unmerge`: every base gets its token's state at layer K through the model's unmerge, a gather
    by the base -> token map (with rotary_merge, each base's copy is then rotated back by its offset
    from its token's position). What the Local Decoder starts from, and the Hugging Face export's
    `base_hidden_state`; bases of one token share one vector under the paper's merge.
  * `local-decoder`: the Local Decoder's normalised per-base states, the input of its 4-way base
    head (Latent Decoder -> unmerge -> local attention), so neighbouring bases of one token
    differ. The decoders read the Latent Encoder's output, so this goes with the last layer only,
    and needs a model that kept its decoders (not a `--encoder-only` conversion).

CARMANIA. Every base is a token. K = n_layers, the default, is the last block's output after the
final norm, what the next-base head reads; 0 < K < n_layers is the residual stream after K blocks;
K = 0 is the token embeddings. Per-base states (`hidden`) are these same states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from megamerge.finetune.heads import local_decoder_states
from megamerge.models.mergedna.token_merging import unmerge
from megamerge.vocabulary import check_input_ids

PER_BASE_SOURCES = {"mergedna": ("unmerge", "local-decoder"), "carmania": ("hidden",)}
LOCAL_LAYER = "local"  # --layer's name for MergeDNA's layer 0


@dataclass(frozen=True)
class StateChoice:
    family: str  # "mergedna" or "carmania"
    layer: int  # blocks applied (see the module docstring)
    depth: int  # the family's last layer: latent_encoder_layers or n_layers
    per_base: str | None  # one of PER_BASE_SOURCES[family], or None for no per-base states

    def describe(self) -> str:
        """The layer in words, for the store's attrs."""
        if self.family == "carmania":
            what = f"CARMANIA after {self.layer} of {self.depth} blocks" if self.layer else "token embeddings"
        elif self.layer == 0:
            what = "Local Encoder output (the merged tokens before any Latent Encoder block)"
        else:
            what = f"Latent Encoder after {self.layer} of {self.depth} blocks"
        return what + (", final norm applied" if self.layer == self.depth else "")


def model_depth(family: str, model_config: dict) -> int:
    return int(model_config["latent_encoder_layers" if family == "mergedna" else "n_layers"])


def receptive_field(choice: StateChoice, model_config: dict) -> int | None:
    """How many bases back a state at the chosen layer can see: CARMANIA's blocks each reach
    attention window - 1 bases further; None for MergeDNA, which sees its whole window."""
    if choice.family != "carmania":
        return None
    return choice.layer * (int(model_config["window"]) - 1)


def choose_states(family: str, model_config: dict, layer: str | None, per_base: str | None) -> StateChoice:
    """Resolve --layer (None: the last) and --per-base ("auto": the family's first source) for
    a model of `family`; a choice the family does not have is a ValueError naming the flag."""
    if family not in PER_BASE_SOURCES:
        raise ValueError(f"embeddings come from MergeDNA or CARMANIA models, not {family}")
    depth = model_depth(family, model_config)
    if layer is None:
        index = depth
    elif layer == LOCAL_LAYER and family == "mergedna":
        index = 0
    else:
        try:
            index = int(layer)
        except ValueError:
            index = -1
        if not 0 <= index <= depth:
            named = " (0 or 'local': the Local Encoder's output)" if family == "mergedna" else ""
            raise ValueError(f"--layer {layer}: this {family} model has layers 0..{depth}{named}")
    if per_base == "auto":
        per_base = PER_BASE_SOURCES[family][0]
    if per_base is not None and per_base not in PER_BASE_SOURCES[family]:
        raise ValueError(f"--per-base {per_base} is not a {family} source; choose "
                         f"{' or '.join(PER_BASE_SOURCES[family])}")
    if per_base == "local-decoder" and index != depth:
        raise ValueError(f"--per-base local-decoder reads the Latent Encoder's output (layer {depth}); "
                         f"--layer {layer} cannot go with it: use --per-base unmerge, or drop --layer")
    return StateChoice(family, index, depth, per_base)


@dataclass
class WindowStates:
    tokens: torch.Tensor  # [B, L, D] token states at the chosen layer (CARMANIA: L = N)
    assign: torch.Tensor  # [B, N] long, base -> token
    token_valid: torch.Tensor  # [B, L] bool, a prefix of each row
    bases: torch.Tensor | None  # [B, N, D] per-base states, when asked for

    def to_host(self) -> WindowStates:
        """On the CPU, states in float32 (whatever the compute dtype)."""
        return WindowStates(self.tokens.float().cpu(), self.assign.cpu(), self.token_valid.cpu(),
                            None if self.bases is None else self.bases.float().cpu())


@torch.no_grad()
def window_states(model: nn.Module, input_ids: torch.Tensor, choice: StateChoice) -> WindowStates:
    """The chosen states of a batch of windows, input_ids [B, N] right-padded with PAD."""
    base_valid = check_input_ids(input_ids)  # [B, N]
    B, N = input_ids.shape
    if choice.family == "carmania":
        hidden = model.hidden_states(input_ids, choice.layer)  # [B, N, D]
        assign = torch.arange(N, device=input_ids.device).expand(B, N)
        return WindowStates(hidden, assign, base_valid, hidden if choice.per_base else None)
    latent = model.encode_state(input_ids, choice.layer)  # x [B, L, D], assign [B, N]
    bases = None
    if choice.per_base == "unmerge":
        base_pos = torch.arange(N, device=input_ids.device, dtype=torch.float32).expand(B, N)
        bases = unmerge(latent.x, latent.assign, base_pos, latent.pos, model.cfg.merge_theta)  # [B, N, D]
    elif choice.per_base == "local-decoder":
        bases = local_decoder_states(model, latent, base_valid)  # [B, N, D]
    return WindowStates(latent.x, latent.assign, latent.valid, bases)
