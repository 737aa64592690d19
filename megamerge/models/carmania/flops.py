"""Model FLOPs of one CARMANIA training step, for MFU."""

from __future__ import annotations

from megamerge.models.carmania.config import CarmaniaConfig
from megamerge.vocabulary import NUM_BASE_CLASSES


def training_flops_per_sequence(cfg: CarmaniaConfig, n: int) -> float:
    """Model FLOPs of one training step on a sequence of n bases (2 per multiply-add, backward =
    2x forward), counting the attention band each query really sees."""
    kv_dim = cfg.n_kv_heads * cfg.head_dim
    projections = 2 * cfg.dim * cfg.dim + 2 * cfg.dim * kv_dim + 3 * cfg.dim * cfg.ffn_dim
    attended = (sum(min(i + 1, cfg.window) for i in range(min(n, cfg.window)))
                + max(0, n - cfg.window) * cfg.window)
    per_layer = 2 * n * projections + 2 * 2 * attended * cfg.dim
    forward = cfg.n_layers * per_layer + 2 * n * cfg.dim * NUM_BASE_CLASSES
    return 3 * forward
