"""Order-k Markov baseline over a prepared corpus: fit on the train split, choose k (and the
smoothing) on the valid split, report per-base perplexity and accuracy; and the log-likelihood
ratio of an SNV under it (benchmarks/zero_shot.py's baseline).

The bar MergeDNA has to clear on real genomes. Every order is scored on the same positions (those
with at least `max_order` preceding A/C/G/T bases), so perplexities are comparable across k. The
Markov model predicts each base from the true preceding bases, a more generous context than a
masked model gets when whole tokens are masked.

    python benchmarks/markov_baseline.py --data runs/real/corpus [--max-order 10]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megamerge.data import build_pretrain_loader

SMOOTHING = (0.01, 0.1, 1.0)


def split_sequences(data: str, split: str, seq_len: int | None = None):
    """Yield uint8 rows (codes 0..4; padding dropped) of one split, in shard order."""
    loader = build_pretrain_loader(data, split, micro_batch=256, seq_len=seq_len, rank=0, world_size=1,
                                   num_workers=0, shuffle=False, epochs=1)
    for batch in loader:
        for row in batch.numpy():
            yield row[row < 5].astype(np.uint8)


def context_codes(seq: np.ndarray, order: int, max_order: int):
    """(context code, target) for positions with `max_order` preceding A/C/G/T bases."""
    if len(seq) <= max_order:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(seq, max_order + 1)  # [T, max_order + 1]
    ok = (windows < 4).all(axis=1)
    windows = windows[ok].astype(np.int64)
    target = windows[:, -1]
    ctx = np.zeros(len(windows), np.int64)
    for j in range(1, order + 1):  # the base j positions back is digit j - 1
        ctx += windows[:, -1 - j] << (2 * (j - 1))
    return ctx, target


def fit_counts(sequences, max_order: int) -> list[np.ndarray]:
    counts = [np.zeros((4**k, 4), np.int64) for k in range(max_order + 1)]
    for seq in sequences:
        for k in range(max_order + 1):
            ctx, target = context_codes(seq, k, max_order)
            np.add.at(counts[k], (ctx, target), 1)
    return counts


def smoothed_probabilities(rows: np.ndarray, alpha: float) -> np.ndarray:
    """Counts of the next base after each context [T, 4] -> add-alpha probabilities [T, 4]."""
    rows = rows.astype(np.float64)
    return (rows + alpha) / (rows.sum(1, keepdims=True) + 4 * alpha)


def score(counts: list[np.ndarray], sequences, max_order: int) -> dict:
    """Per (k, alpha): summed negative log-likelihood, number correct, number scored."""
    stats = {(k, a): [0.0, 0, 0] for k in range(max_order + 1) for a in SMOOTHING}
    for seq in sequences:
        for k in range(max_order + 1):
            ctx, target = context_codes(seq, k, max_order)
            if not len(ctx):
                continue
            rows = counts[k][ctx]  # [T, 4]
            for a in SMOOTHING:
                p = smoothed_probabilities(rows, a)
                s = stats[(k, a)]
                s[0] += float(-np.log(p[np.arange(len(target)), target]).sum())
                s[1] += int((p.argmax(1) == target).sum())
                s[2] += len(target)
    return stats


def fit_and_validate(data: str, max_order: int) -> tuple[list[np.ndarray], dict]:
    """(counts of every order 0..max_order fitted on the train split, their `score` on the valid split)."""
    counts = fit_counts(split_sequences(data, "train"), max_order)
    return counts, score(counts, list(split_sequences(data, "valid")), max_order)


def best_setting(stats: dict, orders: list[int] | None = None) -> tuple[int, float]:
    """(k, alpha) of the lowest validation perplexity in `score`'s stats, among `orders` (default all)."""
    candidates = {key: s for key, s in stats.items() if orders is None or key[0] in orders}
    return min(candidates, key=lambda key: candidates[key][0] / max(candidates[key][2], 1))


def sequence_log_likelihood(counts: np.ndarray, alpha: float, order: int, seq: np.ndarray) -> float:
    """Sum of log p(base | the `order` bases before it) over the positions of `seq` (codes 0..4) whose
    k + 1 bases are all A/C/G/T, under the order-k counts [4**k, 4] smoothed with add-`alpha`."""
    ctx, target = context_codes(seq, order, order)
    p = smoothed_probabilities(counts[ctx], alpha)
    return float(np.log(p[np.arange(len(target)), target]).sum())


def snv_log_likelihood_ratio(counts: np.ndarray, alpha: float, order: int, contig: np.ndarray, start: int,
                             alt: int) -> float:
    """log p(ALT sequence) - log p(REF sequence) of the SNV at 0-based `start` of `contig` (codes 0..4) that
    puts base code `alt` there: the terms of the k + 1 positions whose base or context holds the variant
    (every other term is the same in both and cancels)."""
    lo, hi = max(0, start - order), min(len(contig), start + order + 1)
    ref = contig[lo:hi]
    alt_seq = ref.copy()
    alt_seq[start - lo] = alt
    return (sequence_log_likelihood(counts, alpha, order, alt_seq)
            - sequence_log_likelihood(counts, alpha, order, ref))


def markov_baseline(data: str, max_order: int = 10) -> dict:
    counts, stats = fit_and_validate(data, max_order)
    table = {f"k={k},alpha={a}": {"perplexity": math.exp(s[0] / max(s[2], 1)),
                                   "accuracy": s[1] / max(s[2], 1), "bases": s[2]}
             for (k, a), s in stats.items()}
    best_k, best_a = best_setting(stats)
    best = stats[(best_k, best_a)]
    return {
        "order": best_k, "alpha": best_a, "perplexity": math.exp(best[0] / max(best[2], 1)),
        "accuracy": best[1] / max(best[2], 1), "valid_bases": best[2],
        "train_bases": int(counts[0].sum()), "table": table,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="prepared corpus (data_prep/prepare.py --out)")
    ap.add_argument("--max-order", type=int, default=10, help="largest k tried")
    args = ap.parse_args(argv)
    result = markov_baseline(args.data, args.max_order)
    print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
