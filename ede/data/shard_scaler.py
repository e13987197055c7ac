"""The scaler of a Parquet table's fit rows, fitted without holding them on one node.

Ingest fits it once, while it writes the table, and records it in the footer
(`SCALER_KEY`); `footer_scaler` says whether that record is the map `fit_scaler` would
fit on the same rows, so a run reuses it instead of taking another pass.
"""

from __future__ import annotations

import json

import numpy as np

from ede.core.scaling import AffineScaler, QuantileMinMaxScaler
from ede.data.parquet_layout import ParquetLayout, read_rows
from ede.storage import shown_url


def fit_scaler(layout: ParquetLayout, skip: np.ndarray, kind: str, seed: int = 0) -> AffineScaler:
    """ESAD's scaler (`kind` as its `scaling`), fitted on the fit rows without holding them.

    "standard_minmax" takes one streaming pass: mean and variance merge
    per row group (Chan et al.), min and max are exact, so the map equals the
    in-memory scaler's fit on the same rows up to float rounding. "quantile_minmax"
    needs percentiles: it fits on up to QUANTILE_SAMPLE fit rows drawn at random
    (all of them, hence exactly the in-memory map, on smaller tables).
    """
    if kind not in ("standard_minmax", "quantile_minmax"):
        raise ValueError(f"scaling={kind!r}: no streaming fit for it")
    if kind == "quantile_minmax":
        fit_rows = np.setdiff1d(np.arange(layout.n_rows), skip)
        if not len(fit_rows):
            raise ValueError(f"{shown_url(layout.url)}: no training rows left to fit the scaler")
        sample = scaler_sample(len(fit_rows), seed)
        if sample is not None:
            fit_rows = fit_rows[sample]
        return QuantileMinMaxScaler().fit(read_rows(layout, fit_rows)[0])
    d = len(layout.feature_names)
    n, mean, m2 = 0, np.zeros(d), np.zeros(d)
    lo, hi = np.full(d, np.inf), np.full(d, -np.inf)
    skip = np.sort(np.asarray(skip, dtype=np.int64))
    for first, table in layout.groups(0, layout.n_rows):
        X, _ = layout.arrays(table)
        keep = ~np.isin(np.arange(first, first + len(X)), skip, assume_unique=True)
        X = X[keep].astype(np.float64)
        if not len(X):
            continue
        k, bmean = len(X), X.mean(axis=0)
        delta = bmean - mean
        m2 += ((X - bmean) ** 2).sum(axis=0) + delta**2 * n * k / (n + k)
        mean += delta * k / (n + k)
        n += k
        lo, hi = np.minimum(lo, X.min(axis=0)), np.maximum(hi, X.max(axis=0))
    if n == 0:
        raise ValueError(f"{shown_url(layout.url)}: no training rows left to fit the scaler")
    std = np.sqrt(m2 / n)
    std = np.where(std > 0, std, 1.0)
    zlo, zhi = (lo - mean) / std, (hi - mean) / std
    span = np.where(zhi - zlo > 0, zhi - zlo, 1.0)
    return AffineScaler.from_dict({"offset": mean + zlo * std, "scale": 1.0 / (std * span)})


QUANTILE_SAMPLE = 200_000  # rows; the 1st percentile of a sample this size is off by ~0.02


def scaler_sample(n_fit: int, seed: int) -> np.ndarray | None:
    """Which of `n_fit` fit rows (sorted positions among them) a percentile scaler is fitted
    on: all of them (None) up to QUANTILE_SAMPLE, else a seeded sample of that many."""
    if n_fit <= QUANTILE_SAMPLE:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_fit, QUANTILE_SAMPLE, replace=False))


def footer_scaler(layout: ParquetLayout, skip: np.ndarray, kind: str, seed: int) -> dict | None:
    """The scaler ingest recorded in the footer, if it is the one `fit_scaler(layout, skip,
    kind, seed)` would fit: same kind, fitted on rows [0, F) with `skip` = rows [F, n), and
    the same seed whenever the fit rows were sampled."""
    if layout.footer_scaler is None:
        return None
    record = json.loads(layout.footer_scaler)
    n_fit = int(record["fit_rows"])
    skip = np.asarray(skip, dtype=np.int64)
    same_rows = len(skip) == layout.n_rows - n_fit and (
        not len(skip) or (int(skip.min()) == n_fit and int(skip.max()) == layout.n_rows - 1)
    )
    sampled = n_fit > QUANTILE_SAMPLE
    if record["kind"] != kind or not same_rows or (sampled and int(record["seed"]) != seed):
        return None
    return record
