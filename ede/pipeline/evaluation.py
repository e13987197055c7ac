"""Candidate against champion, judged on the same held-out test rows.

The promotion rule is only fair when both models see identical rows through the
graphs that ship, so both are scored on this run's `test.parquet` via onnxruntime,
in one streaming pass over it (`ede.scoring.evaluation.evaluate_artifacts`): the
test split is read once, a batch at a time, not whole once per model.
A champion that cannot read these rows (a changed schema, a missing file) is not a
reason to fail the run: its error is recorded and the rule decides with it.
"""

from __future__ import annotations

from typing import Any

from ede.data.ingest import PreparedSplits
from ede.export.artifact import read_metadata
from ede.export.registry import schema_change
from ede.scoring.evaluation import evaluate_artifacts


def compare_on_test(
    artifact_url: str, prepared: PreparedSplits, champion: dict[str, Any] | None
) -> dict[str, Any]:
    """{"candidate": metrics, "champion": metrics or None, "champion_error": str or None,
    "schema_change": how the features differ from the champion's (`registry.schema_change`),
    or None, "curves": {"candidate", "champion"} of `ede.core.metrics.curves`, "extremes":
    the candidate's most and least anomalous test images (image data only, else None)}."""
    urls = [artifact_url] if champion is None else [artifact_url, champion["url"]]
    # required=1: the candidate's errors raise; the champion's come back in its place
    results = evaluate_artifacts(
        urls, prepared.test_url, label_column=prepared.label_column, required=1, with_curves=True
    )
    drawn = {"candidate": results[0].pop("curves"), "champion": None}
    out: dict[str, Any] = {
        "candidate": results[0],
        "champion": None,
        "champion_error": None,
        "schema_change": None,
        "curves": drawn,  # for the run's report (ede.reporting); not part of the metrics
        "extremes": results[0].pop("extremes", None),  # its image grid, for image data
    }
    if champion is not None:
        out["schema_change"] = _schema_change(artifact_url, champion["url"])
        if isinstance(results[1], Exception):
            out["champion_error"] = str(results[1])
        else:
            drawn["champion"] = results[1].pop("curves")
            results[1].pop("extremes", None)  # the report shows the candidate's images
            out["champion"] = results[1]
    return out


def _schema_change(candidate_url: str, champion_url: str) -> str | None:
    try:
        theirs = read_metadata(champion_url).get("feature_names") or []
    except Exception:  # an unreadable champion: its scoring error says why
        return None
    return schema_change(read_metadata(candidate_url).get("feature_names") or [], theirs)
