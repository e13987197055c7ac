"""Test metrics of an exported artifact: the graph that ships is the one judged.

The retraining flow compares a new model and the champion on the same test rows;
scoring both through onnxruntime (not through torch) means the comparison covers
the scaling and everything else baked into each graph, and a champion exported by
an older ede is judged exactly as it runs in production.
"""

from __future__ import annotations

from ede.core.metrics import evaluate
from ede.data.tables import read_labelled_rows
from ede.export.artifact import read_model, session
from ede.scoring.pipeline import infer


def evaluate_artifact(
    artifact_url: str, table_url: str, *, label_column: str = "label", threads: int = 1
) -> dict:
    """AUROC/AUPRC (NaN without labelled anomalies) and flag counts on a labelled table."""
    graph, meta = read_model(artifact_url)  # sha256 checked first
    X, y = read_labelled_rows(
        table_url, list(meta["feature_names"]), tuple(meta["input_shape"]), label_column
    )
    score, flag = infer(session(graph, threads), X)
    flag = flag.astype(bool)
    normal = y == 0
    return {
        **evaluate(y, score),
        "rows": int(len(y)),
        "labelled_anomalies": int(y.sum()),
        "flagged": int(flag.sum()),
        "recall_at_threshold": float(flag[~normal].mean()) if (~normal).any() else None,
        "fpr_at_threshold": float(flag[normal].mean()) if normal.any() else None,
    }
