"""What a retraining run records: the report stored with the model, and the run's summary.

The report (`report.json` beside the published model) answers, for whoever finds
a model later, which data, config and metrics made it and which champion it faced;
the summary is the short answer a scheduler or a caller acts on. Both are plain
JSON-ready dicts built from the steps' results, so nothing needs the run to replay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ede.distributed.tuning_results import SearchSummary, best_params
from ede.pipeline.markdown import tuning_rows

if TYPE_CHECKING:
    from ede.data.ingest import PreparedSplits
    from ede.export.registry import Decision
    from ede.pipeline.layout import RunLayout
    from ede.pipeline.steps import TrainedModel


def run_report(
    layout: RunLayout,
    prepared: PreparedSplits,
    outcome: SearchSummary | None,
    metrics: dict[str, Any],
    export_meta: dict[str, Any],
    champion: dict[str, Any] | None,
    trained: TrainedModel | None = None,
) -> dict[str, Any]:
    """`metrics` from `compare_on_test` (its curves included: the HTML report draws them,
    `ede.reporting`); `champion` the pointer as it was before this run; `trained` gives
    the training's per-epoch losses and validation AUROC (`history`) and the shipped
    model's last epochs with the weights its fit kept (`loss_tail`)."""
    return {
        "version": layout.version,
        "data": {
            "source": prepared.source,
            "sha256": prepared.data_sha256,
            "prepared": prepared.root,
            "test_url": prepared.test_url,
            "rows": prepared.rows,
            "labelled": prepared.labelled,
            "window": prepared.window,
            "partitions": prepared.partitions,
            "late_labels": prepared.late_labels,
        },
        "best_params": best_params(outcome),
        "search": None if outcome is None else search_summary(outcome),
        "metrics": metrics,
        "threshold": export_meta["threshold"],
        "training": {
            "history": list(trained.history) if trained else [],
            "loss_tail": dict(trained.loss_tail) if trained else {},
        },
        "previous_champion": champion,
        "run_url": layout.run_url,
    }


def search_summary(outcome: SearchSummary) -> dict[str, Any]:
    return {
        "trials": len(outcome.table),
        "best_trial": outcome.best_trial,
        "best_val_auroc": outcome.best_val_auroc,
        "results": f"{outcome.table_url}.parquet",
        "seconds": outcome.wall_s,
        "trials_table": tuning_rows(outcome),
    }


def run_summary(
    report: dict[str, Any],
    decision: Decision,
    model_url: str,
    current: dict[str, Any] | None,
    seconds: float,
) -> dict[str, Any]:
    """`model_url` where this run's model was published; `current` the champion pointer now."""
    metrics = report["metrics"]
    return {
        "version": report["version"],
        "model_url": model_url,
        "promoted": decision.promote,
        "reason": decision.reason,
        "test": metrics["candidate"],
        "champion_test": metrics["champion"],
        "champion_url": current["url"] if current else None,
        "champion_version": current["version"] if current else None,
        "data_sha256": report["data"]["sha256"],
        "best_params": report["best_params"],
        "seconds": seconds,
    }
