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


TREND_ROWS = 10  # runs listed in the artifact's table; the plot shows the whole history


def score_markdown(
    name: str, model_url: str, input_url: str, output_url: str, summary: Summary
) -> str:
    """The run, its drift per file, and the trend over the prefix's last runs (a table and
    the plot as a data: URI image, which Prefect's UI renders inline)."""
    lines = [
        f"# ede score: {name}",
        "",
        f"- model: `{shown_url(model_url)}`",
        f"- input: `{shown_url(input_url)}` -> output: `{shown_url(output_url)}`",
        f"- {summary.line()}",
        f"- {drift_line(summary.drift)}",
    ]
    if summary.drift and summary.drift.get("files"):
        lines += ["", "## Drift per input file", "", *drift_files_table(summary.drift)]
    if summary.history:
        lines += ["", *trend_section(summary.history)]
    return "\n".join(lines)


def drift_files_table(drift: dict[str, Any]) -> list[str]:
    """One row per output file of this run, then the run's own."""
    head = "| file | input | rows | PSI | verdict | above threshold | p1 | p50 | p99 |"
    rows = [head, "|---|---|---|---|---|---|---|---|---|"]
    entries = [(f"`{n}`", f"`{f['input']}`", f) for n, f in drift["files"].items()]
    entries.append(("**all**", "", {**drift, "psi": drift["value"]}))
    for file, source, f in entries:
        q = f.get("quantiles") or {}
        rows.append(
            f"| {file} | {source} | {f['rows']} | {f['psi']:.3f} | {_verdict(f['drifted'])} | "
            f"{_share(f.get('above_threshold'))} | {_fmt(q.get('p1'))} | {_fmt(q.get('p50'))} | "
            f"{_fmt(q.get('p99'))} |"
        )
    return rows


def trend_section(runs: list[dict[str, Any]]) -> list[str]:
    """The last runs into this prefix, newest first, and the plot of all of them."""
    import base64

    from ede.reporting.plots import drift_trend  # matplotlib: only when there is a trend

    shown = runs[-TREND_ROWS:][::-1]
    lines = [
        f"## Trend: the last {len(runs)} run(s) into this output",
        "",
        "| run (UTC) | rows | PSI | verdict | above threshold | median score |",
        "|---|---|---|---|---|---|",
    ]
    for r in shown:
        median = (r.get("quantiles") or {}).get("p50")
        lines.append(
            f"| {r['time']} | {r['rows']} | {r['value']:.3f} | {_verdict(r['drifted'])} | "
            f"{_share(r.get('above_threshold'))} | {_fmt(median)} |"
        )
    png = base64.b64encode(drift_trend(runs, runs[-1]["threshold"])).decode()
    return lines + ["", f"![PSI per run, threshold dashed](data:image/png;base64,{png})"]


def _verdict(drifted: bool) -> str:
    return "drifted: retrain" if drifted else "within range"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def drift_line(drift: dict | None) -> str:
    """The scoring run's drift, as an operator reads it (`ede.scoring.drift`)."""
    if not drift or not drift["rows"]:
        return "score drift: n/a (the model records no reference scores, or no rows)"
    verdict = _verdict(drift["drifted"])
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
