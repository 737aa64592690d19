"""How well each score separates labelled variants (--labels): AUROC and AUPRC from scikit-learn, with
label 1 the positive (damaging) class. A score is read in its damaging direction (Score.
higher_means_damaging): likelihood scores are negated, since a damaging ALT is less likely than REF;
distances are taken as they are."""

from __future__ import annotations

import numpy as np

from megamerge.variant_scoring.scorers import Score


class LabelMetricsError(ValueError):
    """Labels that no AUROC can be computed from (one class only)."""


def label_metrics(scores: np.ndarray, labels: list[int | None], columns: tuple[Score, ...]
                  ) -> dict[str, dict]:
    """scores [V, S] with labels [V] (None: unlabelled, left out) -> {score name: {"auroc", "auprc",
    "labelled", "positives"}}."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labelled = np.array([label is not None for label in labels], dtype=bool)
    y = np.array([label for label in labels if label is not None], dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise LabelMetricsError(f"AUROC and AUPRC need labels of both classes among the scored variants; "
                                f"{len(y)} labelled, {int(y.sum())} of them 1")
    out = {}
    for column, score in enumerate(columns):
        values = scores[labelled, column]
        damaging = values if score.higher_means_damaging else -values
        out[score.name] = {"auroc": float(roc_auc_score(y, damaging)),
                           "auprc": float(average_precision_score(y, damaging)),
                           "labelled": len(y), "positives": int(y.sum())}
    return out
