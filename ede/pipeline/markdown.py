"""What a run shows the people who watch the scheduler: short markdown and tables.

A reviewer deciding whether to trust this week's model wants the decision, the two
models' test metrics side by side and where things went, without opening storage.
Undefined metrics (no labelled anomaly in a split) read "n/a", never "nan", and
table cells are plain JSON values, so any UI can show them. Torch-free, so the
scoring job can use it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ede.storage import shown_url

if TYPE_CHECKING:
    from ede.distributed.tuning_results import SearchSummary
    from ede.scoring.batch import Summary


def retrain_markdown(name: str, summary: dict[str, Any], report: dict[str, Any]) -> str:
    """`summary` and `report` as `ede.pipeline.report` builds them."""
    new, old = summary["test"], summary["champion_test"] or {}
    data = report["data"]
    days = data.get("partitions") or []
    days = f", date= partitions {days[0]}..{days[-1]} ({len(days)})" if days else ""
    lines = [
        f"# ede retrain: {name} {summary['version']}",
        "",
        f"**Decision:** {'promoted' if summary['promoted'] else 'kept the champion'}: "
        f"{summary['reason']}",
        "",
        "| | candidate | champion (before this run) |",
        "|---|---|---|",
        f"| test AUROC | {_fmt(new.get('auroc'))} | {_fmt(old.get('auroc'))} |",
        f"| test AUPRC | {_fmt(new.get('auprc'))} | {_fmt(old.get('auprc'))} |",
        f"| flagged / rows | {new['flagged']} / {new['rows']} | "
        f"{_fmt(old.get('flagged'))} / {_fmt(old.get('rows'))} |",
        "",
        f"- data: `{data['source']}`, sha256 `{summary['data_sha256'][:16]}`, "
        f"rows {data['rows']}, labelled {data['labelled']}{days}",
        f"- best config: {summary['best_params'] or 'defaults (no search)'}",
        f"- report (figures): `{summary.get('report_url')}`",
        f"- model: `{shown_url(summary['model_url'])}`",
        f"- champion now: `{shown_url(summary['champion_url'] or 'none')}`",
        f"- wall time: {summary['seconds']:.0f} s",
    ]
    return "\n".join(lines)


def tuning_rows(outcome: SearchSummary) -> list[dict[str, Any]]:
    """One JSON-ready row per trial, without the per-epoch curves: the run's table artifact
    and its report's tuning landscape."""
    rows = outcome.table.drop(columns=["val_auroc_by_report"], errors="ignore")
    return [{k: _cell(v) for k, v in row.items()} for row in rows.to_dict(orient="records")]


def _cell(v: Any) -> Any:
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and not math.isfinite(v) else v


def score_markdown(
    name: str, model_url: str, input_url: str, output_url: str, summary: Summary
) -> str:
    return "\n".join(
        [
            f"# ede score: {name}",
            "",
            f"- model: `{shown_url(model_url)}`",
            f"- input: `{shown_url(input_url)}` -> output: `{shown_url(output_url)}`",
            f"- {summary.line()}",
            f"- {drift_line(summary.drift)}",
        ]
    )


def drift_line(drift: dict | None) -> str:
    """The scoring run's drift, as an operator reads it (`ede.scoring.drift`)."""
    if not drift or not drift["rows"]:
        return "score drift: n/a (the model records no reference scores, or no rows)"
    verdict = "drifted: retrain" if drift["drifted"] else "within range"
    shares = ", ".join(f"{100 * a:.0f}" for a in drift["bin_shares"])
    return (
        f"score drift: PSI {drift['value']:.3f}, {verdict} (threshold {drift['threshold']:g}; "
        f"% of rows per decile of the model's validation scores: {shares})"
    )


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def prepared_line(prepared) -> str:
    """The ingest step in one log line."""
    rows = prepared.rows
    days = prepared.partitions
    window = f" from {len(days)} day(s) {days[0]}..{days[-1]}" if days else ""
    return (
        f"data {prepared.source}{window}: {sum(rows.values())} rows (fit {rows['fit']}, validation "
        f"{rows['validation']}, test {rows['test']}; labelled {prepared.labelled}), sha256 "
        f"{prepared.data_sha256[:12]}, {'reused' if prepared.reused else 'wrote'} "
        f"{shown_url(prepared.root)}"
    )


def search_line(outcome) -> str:
    return (
        f"search: {len(outcome.table)} trials in {outcome.wall_s:.0f} s; best "
        f"{outcome.best_params}, validation AUROC {outcome.best_val_auroc:.4f}"
    )


def model_line(trained, target_fpr: float) -> str:
    return (
        f"model: validation AUROC {trained.final_val_auroc:.4f}; threshold "
        f"{trained.threshold:.4g} at target FPR {target_fpr:g}"
    )
