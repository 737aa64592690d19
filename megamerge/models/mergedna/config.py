"""MergeDNA configuration: one dataclass, named presets, and validation with actionable errors."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from megamerge.models.common.config_options import (
    choice_errors,
    option,
    paper_deviations,
    setting,
    values_before_named,
)


@dataclass
class MergeDNAConfig:
    dim: int = 1024
    n_heads: int = 16
    ffn_dim: int = 2816  # SwiGLU hidden width: 8/3 * dim rounded up to a multiple of 256 (LLaMA)
    local_encoder_layers: int = 4
    latent_encoder_layers: int = 20
    latent_decoder_layers: int = 4
    local_decoder_layers: int = 2
    window: int = 16  # local attention sees |i - j| <= window; merges stay inside windows this wide
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    init_std: float = 0.02

    # Tokenizer (Local Encoder) merging
    grouping_dim: int = 64  # width of the separate grouping embedding that scores merges
    merge_temperature: float = 0.1  # slope of the straight-through gate around the selection threshold
    rotary_merge: bool = option(
        paper=False, choices=(False, True), before=True, renamed_from="merge_rule",
        renamed_values={"paper_average": False, "rotary": True},
        help="the unmerge: off, the paper's Z_N = S^T Z_L (every base of a token gets its vector); on, "
             "megamerge's rotary merge (constituents averaged in the merged token's RoPE frame and rotated "
             "back on unmerge, token_merging.py, so bases of one token get different vectors)")
    merge_selection: str = option(
        paper="per_window", choices=("per_window", "global_rank"), before="global_rank",
        help="the local merges: per_window, the paper's top r_l pairs in each window (Eq. 5); "
             "global_rank, megamerge's one ranking of all pairs across the sequence")
    merge_decisions: str = option(
        paper="learned", choices=("learned", "random", "fixed"), before="learned",
        help="which pairs the Local Encoder merges: learned, the grouping embedding's scores (the paper); "
             "random, chance pairs under the same per-window counts; fixed, chunks of N/L bases "
             "(merge_decisions.py). random and fixed are the tokenizer ablation's controls, at evaluation "
             "or for a baseline trained without a learned tokenizer")
    compression_range: tuple[float, float] = setting(
        (0.4, 0.6), help="clip range LOW HIGH of the sampled L/N in training (the paper's 0.4 0.6)")
    compression_mean: float = 0.5  # training: L/N ~ N(mean, std) clipped to the range
    compression_std: float = 0.05
    eval_compression: float = 0.5  # fixed L/N in eval mode

    # Latent MTR and AMTM
    latent_compression: float = 0.5  # K = ceil(this * L) latent tokens after global merging
    # Pass 2's (latent MTR's) merge down to K. per_block: after every Latent Encoder block,
    # bipartite soft matching merges a share of each sample's L_b - K_b merges (never more than half
    # the tokens in one step), so the sequence shrinks block by block to K at the encoder's end.
    # Reading: ToMe merges inside each block between attention and MLP, scored on the attention
    # keys; megamerge merges between blocks, scored on the cosine of the block's output hidden
    # states (keys are head-sharded under tensor parallelism, and the block stays one module shared
    # by every pass).
    latent_merge_schedule: str = option(
        paper="per_block", choices=("per_block", "single_layer"), before="single_layer",
        help="latent MTR's merge: per_block, the paper's ToMe-style merge of a share of the tokens "
             "after every Latent Encoder block down to K = L/2 (Sec. 3.3); single_layer, megamerge's one "
             "burst before block latent_merge_layer")
    # single_layer only: the merge comes before this latent-encoder block (None: half the blocks;
    # latent_encoder_layers: after the last block). A per_block config leaves it None.
    latent_merge_layer: int | None = None
    size_proportional_attention: bool = option(
        paper=True, choices=(True, False), before=False, renamed_from="latent_attention",
        renamed_values={"size_proportional": True, "plain": False},
        help="latent MTR's attention: on, after each latent merge attention adds log(size) to each key's "
             "logits (ToMe's proportional attention, size = the local tokens a latent token stands for; the "
             "paper's ToMe-style merge); off, plain attention over the merged tokens (megamerge's earlier "
             "behaviour)")
    amtm_mask_ratio: float = 0.5  # fraction of the L local tokens masked by AMTM (K/L in the paper)
    latent_mtr_weight: float = setting(0.25, help="lambda, the latent MTR loss's weight (the paper's 0.25)")
    amtm_normalization: str = option(
        paper="per_masked_token", choices=("per_masked_token", "per_masked_base"), before="per_masked_base",
        help="the AMTM loss: per_masked_token, the cross-entropy summed over masked bases divided by K, "
             "the number of masked tokens (paper Eq. 7); per_masked_base, megamerge's mean over masked bases")
    tm_weight: float = setting(0.0, help="weight of an optional transition-matrix loss on the reconstruction "
                                          "outputs (0: none)")

    def __post_init__(self):
        self.compression_range = tuple(self.compression_range)
        if self.latent_merge_layer is None and self.latent_merge_schedule == "single_layer":
            self.latent_merge_layer = self.latent_encoder_layers // 2
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def merge_theta(self) -> float | None:
        """RoPE base of the rotary merge, or None for the plain size-weighted average."""
        return self.rope_theta if self.rotary_merge else None

    def paper_deviations(self) -> list[str]:
        """The method options in which this config departs from the MergeDNA paper, as
        "field=value" (empty: the paper's method). Sizes and loss weights are choices the paper
        leaves open."""
        return paper_deviations(self)

    @property
    def latent_merge_points(self) -> tuple[int, ...]:
        """Where pass 2 merges, in order: point p merges before latent-encoder block p, and p ==
        latent_encoder_layers after the last block (at the latent norm)."""
        if self.latent_merge_schedule == "per_block":
            return tuple(range(1, self.latent_encoder_layers + 1))
        return (self.latent_merge_layer,)

    def validate(self) -> None:
        def bad(msg: str):
            raise ValueError(f"invalid MergeDNAConfig: {msg}")

        for message in choice_errors(self):
            bad(message)

        for name in ("dim", "n_heads", "ffn_dim"):  # before any rule that divides by them
            if getattr(self, name) < 1:
                bad(f"{name}={getattr(self, name)} must be >= 1")
        if self.dim % self.n_heads:
            bad(f"n_heads={self.n_heads} must divide dim={self.dim}")
        if self.head_dim % 2:
            bad(f"head_dim={self.head_dim} must be even for RoPE")
        if self.window < 2:
            bad(f"window={self.window} must be at least 2 (adjacent tokens must be able to merge)")
        if self.window % 2:
            bad(f"window={self.window} must be even so that merge pairs never straddle a window edge")
        lo, hi = self.compression_range
        if not (0 < lo <= hi <= 1):
            bad(f"compression_range={self.compression_range} must satisfy 0 < low <= high <= 1")
        floor = 0.5**self.local_encoder_layers
        if lo < floor:
            bad(
                f"compression_range low={lo} is below {floor:.3g}: each of the "
                f"{self.local_encoder_layers} local layers can at most halve the tokens"
            )
        for name in ("compression_mean", "eval_compression"):
            value = getattr(self, name)
            if not (0 < value <= 1):
                bad(f"{name}={value} must lie in (0, 1]")
        for name in ("latent_compression", "amtm_mask_ratio"):
            value = getattr(self, name)
            if not (0 < value <= 1):
                bad(f"{name}={value} must lie in (0, 1]")
        if self.compression_std < 0:
            bad(f"compression_std={self.compression_std} must be >= 0")
        for name in ("local_encoder_layers", "latent_encoder_layers", "latent_decoder_layers",
                     "local_decoder_layers"):
            if getattr(self, name) < 1:
                bad(f"{name} must be >= 1")
        self._validate_latent_merge(bad)
        if self.latent_mtr_weight < 0 or self.tm_weight < 0:
            bad("loss weights must be >= 0")

    def _validate_latent_merge(self, bad) -> None:
        if self.latent_merge_schedule == "single_layer":
            if not (0 <= self.latent_merge_layer <= self.latent_encoder_layers):
                bad(f"latent_merge_layer={self.latent_merge_layer} must lie in [0, latent_encoder_layers]")
            return
        if self.latent_merge_layer is not None:
            bad(f"latent_merge_layer={self.latent_merge_layer} applies to latent_merge_schedule=single_layer "
                "only (per_block merges after every latent-encoder block); leave it unset or choose "
                "single_layer")
        floor = 0.5**self.latent_encoder_layers
        if self.latent_compression < floor:
            bad(f"latent_compression={self.latent_compression} is below {floor:.3g}: with "
                f"latent_merge_schedule=per_block each of the {self.latent_encoder_layers} latent-encoder "
                "blocks can at most halve the tokens")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> MergeDNAConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown MergeDNA preset {name!r}; choose one of {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["compression_range"] = list(self.compression_range)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MergeDNAConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown MergeDNAConfig fields: {sorted(unknown)}")
        # A config saved before an option existed was trained with megamerge's behaviour of the
        # time, not the paper default that came later: an old checkpoint must load as it trained.
        return cls(**{**values_before_named(cls), **d})


# The paper's optimiser and schedule (Table A1): AdamW (0.9, 0.95), weight decay 1e-8, lr 1e-4,
# 10k warm-up iterations (eps is not given there: PyTorch's 1e-8). Keys are train.py's flag names.
TRAINING_DEFAULTS = {"lr": 1e-4, "lr_warmup_iters": 10_000, "weight_decay": 1e-8,
                     "adam_beta1": 0.9, "adam_beta2": 0.95, "adam_eps": 1e-8}


def swiglu_width(dim: int, multiple_of: int = 256) -> int:
    return multiple_of * math.ceil(int(8 * dim / 3) / multiple_of)


# Layer counts keep the paper's 4 / N / 4 / 2 shape; larger models widen and deepen the latent part,
# where tensor and pipeline parallelism apply. Recommended layouts are in megamerge/parallel/README.
PRESETS: dict[str, MergeDNAConfig] = {
    # ~2M parameters: CPU tests and the demo.
    "tiny": MergeDNAConfig(
        dim=128, n_heads=4, ffn_dim=352, local_encoder_layers=2, latent_encoder_layers=4,
        latent_decoder_layers=2, local_decoder_layers=2, grouping_dim=32,
    ),
    # The paper's Table A1: D = 1024, 4 / 20 / 4 / 2 blocks, 51M / 253M / 51M / 25M.
    "380m": MergeDNAConfig(),
    # ~1.0B: D = 1536, 24 latent-encoder blocks.
    "1b": MergeDNAConfig(dim=1536, n_heads=16, ffn_dim=4096, latent_encoder_layers=24),
    # ~3.2B: D = 2560, 30 latent-encoder blocks, 128-wide heads.
    "3b": MergeDNAConfig(dim=2560, n_heads=20, ffn_dim=6912, latent_encoder_layers=30),
    # ~6.9B: LLaMA-7B widths (D = 4096, FFN 11008), 24 latent-encoder blocks.
    "7b": MergeDNAConfig(dim=4096, n_heads=32, ffn_dim=11008, latent_encoder_layers=24),
}

