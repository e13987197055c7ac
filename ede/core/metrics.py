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
