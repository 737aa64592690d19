"""Training logs: `<save>/metrics.jsonl` (one JSON object per logged iteration), the same scalars
in TensorBoard, and a console progress line. Only global rank 0 writes."""

from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch


class MetricsLogger:
    def __init__(self, save_dir: str | None, tensorboard_dir: str | None, enabled: bool):
        self.enabled = enabled
        self.jsonl = None
        self.tb = None
        if not enabled:
            return
        if save_dir:
            Path(save_dir).mkdir(parents=True, exist_ok=True)
            # Open for the whole run, line-buffered so a killed run keeps every logged line; close() ends it.
            self.jsonl = open(Path(save_dir) / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(tensorboard_dir)

    def log(self, record: dict, token_lengths: torch.Tensor | None = None) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        if self.jsonl:
            self.jsonl.write(json.dumps(clean) + "\n")
        if self.tb:
            split = record.get("split", "train")
            step = record["iteration"]
            for key, value in record.items():
                if (isinstance(value, (int, float)) and key not in ("iteration", "split")
                        and value is not None):
                    self.tb.add_scalar(f"{split}/{key}", value, step)
                elif isinstance(value, dict):  # e.g. samples_by_species: one curve per species
                    for name, count in value.items():
                        self.tb.add_scalar(f"{split}/{key}/{name}", count, step)
            lengths = None if token_lengths is None else token_lengths.float().cpu().flatten()
            lengths = None if lengths is None else lengths[lengths > 0]  # padding tokens cover no base
            if lengths is not None and lengths.numel():
                self.tb.add_histogram(f"{split}/token_length_bases", lengths, step)
            self.tb.flush()

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.tb:
            self.tb.close()


class Progress:
    """`iter 120/300 | loss 2.3456 | 41.2k bases/s | eta 3m12s` on stderr, rank 0 only."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.total, self.start, self.enabled = total, start, enabled
        self.t0 = time.time()

    def line(self, iteration: int, loss: float, bases_per_second: float, extra: str = "") -> None:
        if not self.enabled:
            return
        done = iteration - self.start
        rate = done / max(time.time() - self.t0, 1e-9)
        eta = (self.total - iteration) / rate if rate > 0 else float("inf")
        eta_s = f"{int(eta // 60)}m{int(eta % 60):02d}s" if math.isfinite(eta) else "?"
        print(f"iter {iteration}/{self.total} | loss {loss:.4f} | {bases_per_second / 1e3:.1f}k bases/s | "
              f"eta {eta_s}{(' | ' + extra) if extra else ''}", file=sys.stderr, flush=True)


class IntervalMeans:
    """The logged scalars summed since the last log line, and the wall time since then: a log
    line reports their means over the interval and its throughput."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.iterations = 0
        self.started = time.time()

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] += value
        self.iterations += 1

    def means(self) -> dict[str, float]:
        return {key: total / self.iterations for key, total in self.sums.items()}

    def seconds(self) -> float:
        return max(time.time() - self.started, 1e-9)
