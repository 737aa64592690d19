"""Task metrics from scikit-learn (and scipy for the correlations).

Headline metric, the one dev selection and results.json's `test_mean` use:
* classification and per-base: MCC (GUE's and the NT benchmark's metric; per-base MCC is over
  every labelled base of the split pooled together);
* regression: Pearson's r (what regression benchmarks of DNA models, e.g. DeepSTARR-style tasks,
  report).
Also reported: accuracy, macro-F1, AUROC (binary: on the positive class's probability; multi-class:
one-vs-rest macro average; omitted when a split lacks a class); Spearman, R² and MSE for regression.
A metric that is undefined (a constant prediction's correlation) is NaN, and dev selection treats it
as the worst value.
"""

from __future__ import annotations

import math

import numpy as np

HEADLINE = {"classification": "mcc", "per_base": "mcc", "regression": "pearson"}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """logits [S, C] float, labels [S] int -> metrics."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

    pred = logits.argmax(-1)
    out = {
        "mcc": float(matthews_corrcoef(labels, pred)),
        "accuracy": float(accuracy_score(labels, pred)),
        "f1_macro": float(f1_score(labels, pred, average="macro", zero_division=0)),
    }
    n_classes = logits.shape[-1]
    if len(np.unique(labels)) == n_classes:
        prob = softmax(logits.astype(np.float64))
        if n_classes == 2:
            out["auroc"] = float(roc_auc_score(labels, prob[:, 1]))
        else:
            out["auroc"] = float(roc_auc_score(labels, prob, multi_class="ovr", average="macro"))
    return out


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_squared_error, r2_score

    constant = np.ptp(pred) == 0 or np.ptp(target) == 0
    return {
        "pearson": math.nan if constant else float(pearsonr(pred, target)[0]),
        "spearman": math.nan if constant else float(spearmanr(pred, target)[0]),
        "r2": float(r2_score(target, pred)),
        "mse": float(mean_squared_error(target, pred)),
    }


def compute_metrics(task_type: str, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """outputs as the head returns them, concatenated over the split (per-base: only the labelled
    bases, [M, C] with labels [M])."""
    if task_type == "regression":
        return regression_metrics(outputs.astype(np.float64), labels.astype(np.float64))
    return classification_metrics(outputs, labels)


def selection_score(metrics: dict[str, float], task_type: str) -> float:
    value = metrics[HEADLINE[task_type]]
    return -math.inf if math.isnan(value) else value
