"""How far apart two contexts' token-length distributions are, against how far apart chance alone
puts two halves of one context.

js_distance: the Jensen-Shannon distance, the square root of the JS divergence in bits, so 0 for
identical distributions and 1 for disjoint ones. The distributions are the per-base histograms of
megamerge/token_analysis.py (lengths 1..15 and 16+).

Split-half baseline: a context's units (megamerge/token_contexts.py: sequences, or blocks of
consecutive bases) are shared out at random into two halves of equal unit count, and the distance
between the halves' histograms is measured; `splits` such draws, seeded, give a mean and a max. A
distance between two contexts is only worth reading when it clearly exceeds both contexts' baselines:
`ratio` = distance / max(the two baselines' means).
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
from scipy.special import rel_entr

from megamerge.token_analysis import length_stats


def js_distance(p, q) -> float:
    """Jensen-Shannon distance (base 2) between two histograms, each normalised to sum 1.

    scipy.spatial.distance.jensenshannon computes the same sum but returns NaN when rounding makes
    the divergence of two near-identical histograms a hair below 0 (seen with scipy 1.17), so the
    divergence is clipped at 0 here."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0 or (p < 0).any() or (q < 0).any():
        raise ValueError("js_distance needs two non-negative histograms of one shape, each with mass")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    divergence = (rel_entr(p, m).sum() + rel_entr(q, m).sum()) / (2 * math.log(2))
    return float(min(1.0, math.sqrt(max(0.0, divergence))))


def histogram(units: list[np.ndarray]) -> list[float]:
    """The per-base token-length histogram of some units' bases together."""
    return length_stats(np.concatenate(units))["histogram_per_base"]


def split_half_js(units: list[np.ndarray], splits: int, seed: int) -> dict:
    """JS distance between two random halves of a context's units, over `splits` seeded draws."""
    if len(units) < 2:
        return {"units": len(units), "splits": 0, "mean": None, "max": None, "values": [],
                "note": "fewer than 2 units: no split possible"}
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(splits):
        order = rng.permutation(len(units))
        half = len(units) // 2
        values.append(js_distance(histogram([units[i] for i in order[:half]]),
                                  histogram([units[i] for i in order[half:]])))
    return {"units": len(units), "splits": splits, "mean": round(float(np.mean(values)), 6),
            "max": round(max(values), 6), "values": [round(v, 6) for v in values]}


def pairwise_js(histograms: dict[str, list[float]], split_half: dict[str, dict]) -> tuple[dict, dict]:
    """-> (js_distance[a][b], ratio[a][b] = js / max(split-half means of a and b)), both symmetric; a
    ratio is None where neither context has a baseline or both baselines are 0."""
    distance: dict[str, dict] = {name: {} for name in histograms}
    ratio: dict[str, dict] = {name: {} for name in histograms}
    for a, b in combinations(histograms, 2):
        d = round(js_distance(histograms[a], histograms[b]), 6)
        baselines = [split_half[n]["mean"] for n in (a, b) if split_half[n]["mean"] is not None]
        r = round(d / max(baselines), 3) if baselines and max(baselines) > 0 else None
        distance[a][b] = distance[b][a] = d
        ratio[a][b] = ratio[b][a] = r
    return distance, ratio
