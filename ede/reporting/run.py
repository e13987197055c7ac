"""A run's report from what it stored: `models/<name>/<version>/report.json`, any fsspec URL.

Everything a figure needs is in report.json (curves of both models on the test rows,
the training history, the trials), so a report can be rebuilt a month later from
object storage alone (`ede report URL --out FILE`), and the retraining flow writes it
as `report.html` beside report.json when it publishes a version.
"""

from __future__ import annotations

from typing import Any

from ede.reporting import page
from ede.storage import join, read_json, shown_url, write_bytes_atomic

REPORT_JSON, REPORT_HTML = "report.json", "report.html"


def figures(report: dict[str, Any]) -> dict[str, bytes]:
    """{caption: PNG} of every figure the report's data allow."""
    from ede.reporting import plots  # matplotlib (1.2 s) only once there is a page to draw

    metrics = report.get("metrics") or {}
    curves = metrics.get("curves") or {}
    out: dict[str, bytes] = {}
    if curves.get("candidate"):
        aurocs = {k: (metrics.get(k) or {}).get("auroc") for k in ("candidate", "champion")}
        out["ROC and precision-recall: candidate against champion"] = plots.roc_pr(curves, aurocs)
        out["Score histograms and the threshold"] = plots.score_histogram(
            curves["candidate"]["hist"], float(report["threshold"])
        )
    if metrics.get("extremes"):  # image data only: evaluation keeps images for image models
        out["Test images scored most and least anomalous"] = plots.image_grid(metrics["extremes"])
    history = (report.get("training") or {}).get("history") or []
    if history:
        out["Training: loss terms and validation AUROC"] = plots.training_curves(history)
    search = report.get("search") or {}
    if search.get("trials_table"):
        out["Tuning landscape"] = plots.tuning_landscape(
            search["trials_table"], search.get("best_trial")
        )
    return out


def build(version_url: str) -> str:
    """The HTML page of the version at `version_url` (the folder holding report.json)."""
    report = read_json(join(version_url, REPORT_JSON))
    title = f"ede run {report.get('version', '')}"
    return page.render(report, figures(report), title)


def write(version_url: str, out: str | None = None) -> str:
    """Build the page and write it (default: report.html beside report.json); its URL."""
    target = out or join(version_url, REPORT_HTML)
    write_bytes_atomic(target, build(version_url).encode())
    return shown_url(target)
