"""Candidate against champion, judged on the same held-out test rows.

The promotion rule is only fair when both models see identical rows through the
graphs that ship, so both are scored on this run's `test.parquet` via onnxruntime.
A champion that cannot read these rows (a changed schema, a missing file) is not a
reason to fail the run: its error is recorded and the rule decides with it.
"""

from __future__ import annotations

from typing import Any

from ede.data.ingest import PreparedSplits
from ede.scoring.evaluation import evaluate_artifact


def compare_on_test(
    artifact_url: str, prepared: PreparedSplits, champion: dict[str, Any] | None
) -> dict[str, Any]:
    """{"candidate": metrics, "champion": metrics or None, "champion_error": str or None}."""
    test, label = prepared.test_url, prepared.label_column
    out: dict[str, Any] = {
        "candidate": evaluate_artifact(artifact_url, test, label_column=label),
        "champion": None,
        "champion_error": None,
    }
    if champion is not None:
        try:
            out["champion"] = evaluate_artifact(champion["url"], test, label_column=label)
        except (ValueError, FileNotFoundError) as exc:
            out["champion_error"] = str(exc)
    return out
