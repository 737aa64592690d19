"""CARMANIA configuration (arXiv 2507.09378): one dataclass, named presets, actionable validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from megamerge.models.common.config_options import setting


@dataclass
class CarmaniaConfig:
    dim: int = 1024
    n_layers: int = 5
    n_heads: int = 16  # query heads
    n_kv_heads: int = 4  # grouped-query attention: each K/V head serves n_heads / n_kv_heads queries
    ffn_dim: int = 4608  # SwiGLU hidden width
    window: int = 128  # causal sliding window: a base attends to itself and the window - 1 before it
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    init_std: float = 0.02
    tm_weight: float = setting(1.0, help="beta in L = L_NT + beta * L_TM, the transition-matrix loss's "
                                         "weight (the paper's 1; 5 hurts)")

    def __post_init__(self):
        self.validate()

    def paper_deviations(self) -> list[str]:
        """The options in which this config departs from the CARMANIA paper: none are named yet
        (sizes and tm_weight are the paper's own knobs), so always empty."""
        return []

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def validate(self) -> None:
        def bad(msg: str):
            raise ValueError(f"invalid CarmaniaConfig: {msg}")

        for name in ("dim", "n_heads", "ffn_dim"):  # before any rule that divides by them
            if getattr(self, name) < 1:
                bad(f"{name}={getattr(self, name)} must be >= 1")
        if self.dim % self.n_heads:
            bad(f"n_heads={self.n_heads} must divide dim={self.dim}")
        if self.head_dim % 2:
            bad(f"head_dim={self.head_dim} must be even for RoPE")
        if self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads:
            bad(f"n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}")
        if self.n_layers < 1 or self.ffn_dim < 1:
            bad("n_layers and ffn_dim must be >= 1")
        if self.window < 2:
            bad(f"window={self.window} must be >= 2 (a base must see at least its predecessor)")
        if self.tm_weight < 0:
            bad(f"tm_weight={self.tm_weight} must be >= 0")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> CarmaniaConfig:
        if name not in CARMANIA_PRESETS:
            raise ValueError(f"unknown CARMANIA preset {name!r}; choose one of {sorted(CARMANIA_PRESETS)}")
        return replace(CARMANIA_PRESETS[name], **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CarmaniaConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown CarmaniaConfig fields: {sorted(unknown)}")
        return cls(**d)


# The CARMANIA paper's optimiser and schedule: AdamW (0.9, 0.999), eps 1e-6, weight decay 0.2,
# lr 5e-4, 400 warm-up steps. Keys are train.py's flag names.
TRAINING_DEFAULTS = {"lr": 5e-4, "lr_warmup_iters": 400, "weight_decay": 0.2,
                     "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_eps": 1e-6}

CARMANIA_PRESETS: dict[str, CarmaniaConfig] = {
    # ~0.4M parameters: CPU tests, the demo, and the generation round trip.
    "carmania-tiny": CarmaniaConfig(dim=128, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=352, window=32),
    # The paper's model: 5 blocks, d = 1024, MLP 4608, 16 / 4 heads, window 128, ~83M parameters.
    "carmania-83m": CarmaniaConfig(),
}
