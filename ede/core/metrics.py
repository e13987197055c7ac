"""Evaluation metrics, through scikit-learn (anomaly = positive class)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def evaluate(y_true, scores) -> dict[str, float]:
    """AUROC and AUPRC; NaN when y_true holds a single class (nothing to rank)."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return {"auroc": float("nan"), "auprc": float("nan")}
    return {
        "auroc": float(roc_auc_score(y_true, scores)),
        "auprc": float(average_precision_score(y_true, scores)),
    }


def curves(y_true, scores, max_points: int = 400, bins: int = 40) -> dict | None:
    """What a report draws of one model on labelled rows, small enough to store beside its
    metrics: ROC and precision-recall points (scikit-learn's, thinned to `max_points`) and
    histograms of normal and anomalous scores on shared edges (clipped to the 0.1-99.9th
    percentiles, so one outlier does not squash the rest). None without both classes."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    y_true, scores = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    if len(np.unique(y_true)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y_true, scores)
    precision, recall, _ = precision_recall_curve(y_true, scores)
    lo, hi = np.percentile(scores, [0.1, 99.9])
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    clipped = np.clip(scores, edges[0], edges[-1])
    return {
        "roc": {"fpr": _thin(fpr, max_points), "tpr": _thin(tpr, max_points)},
        "pr": {"recall": _thin(recall, max_points), "precision": _thin(precision, max_points)},
        "hist": {
            "edges": edges.tolist(),
            "normal": np.histogram(clipped[y_true == 0], edges)[0].tolist(),
            "anomaly": np.histogram(clipped[y_true == 1], edges)[0].tolist(),
        },
    }


def _thin(values: np.ndarray, n: int) -> list[float]:
    """At most `n` points, evenly by index, the first and last kept."""
    if len(values) <= n:
        return [float(v) for v in values]
    idx = np.unique(np.linspace(0, len(values) - 1, n).round().astype(int))
    return [float(v) for v in values[idx]]
