"""A search's results as a table, and the rule that picks its winner.

Validation splits hold a handful of labelled anomalies, so the best of many epochs
or configs on them overfits (a prototype's config that led validation by 7 points
trailed on test). The rule is therefore narrow: only trials that trained the whole
budget can win, each is judged by its validation AUROC after its last epoch (never
its best epoch, nor the weighted loss, which is not comparable across weights), and
the defaults, always one of the trials, are replaced only by a trial that beats
them by more than the validation AUROC's standard error: the model a search ships
is never worse on validation than the defaults.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
import ray.train

METRIC = "val_auroc"


@dataclass
class SearchSummary:
    """A search's result without its rows or models: what a caller that only orchestrates
    (the retraining flow's process) keeps, and what the final model is built from."""

    best_params: dict[str, Any]
    best_val_auroc: float
    best_trial: str
    defaults_val_auroc: float  # the defaults' trial, judged alike
    checkpoint: str  # the refitted model's checkpoint, else the best trial's
    table: pd.DataFrame
    table_url: str
    wall_s: float

    def summary(self) -> SearchSummary:
        return SearchSummary(**{f.name: getattr(self, f.name) for f in fields(SearchSummary)})


def best_params(outcome: SearchSummary | None) -> dict[str, Any]:
    """The winning loss weights; none (ESAD's defaults) without a search."""
    return dict(outcome.best_params) if outcome is not None else {}


def results_table(
    grid, reports: int, space: list[str], defaults: dict[str, Any], val_counts: tuple[int, int]
) -> pd.DataFrame:
    """One row per trial: config, whether it is the defaults, validation AUROC per report,
    final AUROC, epochs trained, wall time, status, checkpoint, error."""
    rows = []
    for i in range(len(grid)):
        r = grid[i]
        frame = r.metrics_dataframe
        history = [] if frame is None or METRIC not in frame else frame[METRIC].tolist()
        epochs = [] if frame is None or "epoch" not in frame else frame["epoch"].tolist()
        metrics = r.metrics or {}
        status = "error" if r.error else ("completed" if len(history) >= reports else "stopped")
        checkpoint = r.checkpoint.path if r.checkpoint else metrics.get("checkpoint_path", "")
        rows.append(
            {
                "trial_id": metrics.get("trial_id", r.path.rsplit("/", 1)[-1]),
                **{k: r.config.get(k) for k in space},
                "defaults": is_defaults(r.config, defaults),
                "status": status,
                "epochs_done": int(epochs[-1]) + 1 if epochs else 0,
                "final_val_auroc": history[-1] if history else math.nan,
                "final_val_auprc": metrics.get("val_auprc", math.nan),
                "val_auroc_by_report": json.dumps([_finite(v) for v in history]),
                "wall_s": metrics.get("time_total_s", math.nan),
                "checkpoint": checkpoint or "",
                "error": "" if not r.error else str(r.error).splitlines()[0][:300],
            }
        )
    return mark_best(pd.DataFrame(rows), *val_counts)


def is_defaults(config: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether a trial's config is the defaults' point (passed to Tune as exact values)."""
    return all(config.get(k) == v for k, v in defaults.items())


def mark_best(table: pd.DataFrame, n_anomalies: int, n_normals: int) -> pd.DataFrame:
    """The `best` column: the defaults' trial, unless a completed trial beats its final
    validation AUROC by more than that AUROC's standard error on this split (Hanley and
    McNeil, 1982); then the completed trial with the highest final AUROC. With a handful
    of validation anomalies a lead smaller than the error is noise, and a search that
    chases it ships a worse model than the defaults (seen on cardio's test rows)."""
    table["best"] = False
    eligible = table[(table["status"] == "completed") & table["final_val_auroc"].notna()]
    if not len(eligible):
        return table
    top = eligible.loc[eligible["final_val_auroc"].idxmax()]
    mine = eligible[eligible["defaults"]]
    if len(mine):
        base = float(mine["final_val_auroc"].iloc[0])
        if top["final_val_auroc"] <= base + auroc_standard_error(base, n_anomalies, n_normals):
            top = mine.iloc[0]
    table.loc[top.name, "best"] = True
    return table


def auroc_standard_error(auroc: float, n_anomalies: int, n_normals: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUROC from its two class sizes."""
    a, n1, n2 = auroc, max(n_anomalies, 1), max(n_normals, 1)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)) / (n1 * n2)
    return math.sqrt(max(var, 0.0))


def best_row(table: pd.DataFrame) -> pd.Series:
    if not table["best"].any():
        errors = "; ".join(e for e in table["error"] if e)[:300]
        raise RuntimeError(f"no trial completed its budget{': ' + errors if errors else ''}")
    return table.loc[table["best"]].iloc[0]


def trial_checkpoint(path: str, storage: str) -> ray.train.Checkpoint:
    """A checkpoint the results table names (a path on `storage`'s filesystem), loadable."""
    import pyarrow.fs as pafs

    if not path:
        raise ValueError("the trial reported no checkpoint")
    fs = pafs.FileSystem.from_uri(storage)[0] if "://" in storage else pafs.LocalFileSystem()
    return ray.train.Checkpoint(path=path, filesystem=fs)


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None
