"""Per-worker reads of a Parquet table: each worker reads only the row groups of its shard.

The driver never holds all the training features: it reads the label column (one
small column) to carve a stratified validation split, gathers the validation rows,
and fits the scaler in one streaming pass over row groups (percentiles: on a sample
of at most QUANTILE_SAMPLE rows). Workers then open the same URL and read the row
groups that cover their contiguous range of rows.

Shards are contiguous row ranges, so a table sorted by label gives workers
different mixes; DDP averages their gradients, so training is still correct, but
write shuffled tables for the smoothest runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ede.core.checks import check_labels
from ede.core.scaling import AffineScaler, QuantileMinMaxScaler
from ede.data.protocol import validation_split
from ede.storage import shown_url


@dataclass(frozen=True)
class ParquetLayout:
    """Where a table is and how its rows fall into row groups (no data)."""

    url: str
    feature_names: tuple[str, ...]
    label_column: str | None  # None: the column is absent, every row unlabelled
    group_rows: tuple[int, ...]

    @property
    def n_rows(self) -> int:
        return sum(self.group_rows)

    def _open(self) -> pq.ParquetFile:
        fs, path = fsspec.core.url_to_fs(self.url)
        return pq.ParquetFile(fs.open(path, "rb"))

    def groups(self, start: int, stop: int) -> Iterator[tuple[int, pa.Table]]:
        """(first row index, table) of each row group overlapping rows [start, stop)."""
        pf, first = self._open(), 0
        columns = list(self.feature_names) + ([self.label_column] if self.label_column else [])
        for i, n in enumerate(self.group_rows):
            if first < stop and first + n > start:
                yield first, pf.read_row_group(i, columns=columns)
            first += n

    def arrays(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        X = np.column_stack(
            [table.column(c).to_numpy().astype(np.float32) for c in self.feature_names]
        )
        if not np.isfinite(X).all():
            bad = self.feature_names[int(np.argwhere(~np.isfinite(X))[0][1])]
            raise ValueError(f"{shown_url(self.url)}: feature column '{bad}' has NaN/inf values")
        if self.label_column is None:
            return X, np.zeros(len(X), dtype=np.int64)
        return X, _labels(table.column(self.label_column).to_numpy(), self)


def inspect_parquet(
    url: str, label_column: str | None = "label", feature_columns: list[str] | None = None
) -> ParquetLayout:
    """Read the footer only; fail with one line naming the file or column at fault."""
    if not url.split("?", 1)[0].lower().endswith(".parquet"):
        raise ValueError(
            f"{shown_url(url)}: distributed training reads Parquet (workers read their row "
            "groups); convert the table to .parquet"
        )
    fs, path = fsspec.core.url_to_fs(url)
    try:
        meta = pq.ParquetFile(fs.open(path, "rb")).metadata
    except FileNotFoundError:
        raise FileNotFoundError(f"{shown_url(url)}: no such file") from None
    schema = meta.schema.to_arrow_schema()
    has_label = label_column is not None and label_column in schema.names
    names = feature_columns or [c for c in schema.names if not (has_label and c == label_column)]
    for name in names:
        if name not in schema.names:
            raise ValueError(f"{shown_url(url)}: requested feature column '{name}' is missing")
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise ValueError(f"{shown_url(url)}: feature column '{name}' is not numeric ({kind})")
    if not names or meta.num_rows == 0:
        raise ValueError(f"{shown_url(url)}: no feature columns or no rows")
    groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    return ParquetLayout(url, tuple(names), label_column if has_label else None, groups)


def _labels(values: np.ndarray, layout: ParquetLayout) -> np.ndarray:
    return check_labels(values, f"{shown_url(layout.url)}: label column '{layout.label_column}'")


def read_labels(layout: ParquetLayout) -> np.ndarray:
    """The label column alone (1 byte-ish per row), or zeros when the table has none."""
    if layout.label_column is None:
        return np.zeros(layout.n_rows, dtype=np.int64)
    column = layout._open().read(columns=[layout.label_column]).column(0).to_numpy()
    return _labels(column, layout)


def split_rows(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows): the very rows `ede train` in-process would pick."""
    rows = np.arange(len(y)).reshape(-1, 1)
    fit, _, val, _ = validation_split(rows, y, fraction=fraction, seed=seed)
    return fit[:, 0], val[:, 0]


def read_rows(layout: ParquetLayout, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw (unscaled) rows by index, in index order; reads only the groups that hold them."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    Xs, ys = [], []
    if len(rows):
        for first, table in layout.groups(int(rows[0]), int(rows[-1]) + 1):
            local = rows[(rows >= first) & (rows < first + table.num_rows)] - first
            if len(local):
                X, y = layout.arrays(table.take(pa.array(local)))
                Xs.append(X)
                ys.append(y)
    d = len(layout.feature_names)
    if not Xs:
        return np.empty((0, d), np.float32), np.empty(0, np.int64)
    return np.concatenate(Xs), np.concatenate(ys)


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
        if len(fit_rows) > QUANTILE_SAMPLE:
            rng = np.random.default_rng(seed)
            fit_rows = rng.choice(fit_rows, QUANTILE_SAMPLE, replace=False)
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


class ParquetShard:
    """`config["data"]` for `train_loop`: rank r of w reads rows [r*n/w, (r+1)*n/w) only.

    Rows in `skip` (the validation split) are dropped; the rest are scaled with the
    driver's scaler. Pickled to workers as a URL, a row-group table and two arrays.
    """

    def __init__(self, layout: ParquetLayout, scaler: dict, skip: np.ndarray):
        self.layout, self.scaler = layout, scaler
        self.skip = np.sort(np.asarray(skip, dtype=np.int64))

    def __call__(self, rank: int, world_size: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.layout.n_rows
        start, stop = rank * n // world_size, (rank + 1) * n // world_size
        Xs, ys = [], []
        for first, table in self.layout.groups(start, stop):
            lo, hi = max(start, first), min(stop, first + table.num_rows)
            X, y = self.layout.arrays(table.slice(lo - first, hi - lo))
            keep = ~np.isin(np.arange(lo, hi), self.skip, assume_unique=True)
            Xs.append(X[keep])
            ys.append(y[keep])
        scaler = AffineScaler.from_dict(self.scaler)
        return scaler.transform(np.concatenate(Xs)), np.concatenate(ys)
